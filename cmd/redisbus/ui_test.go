package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/redisbusprom"
)

// startUI serves the page in the test's process, sampling every 50 ms, and
// returns its URL; the sampler ends with the test.
func (e *env) startUI(metrics ...string) string {
	e.t.Helper()
	u := newUI(e.client, uiOptions{match: "*", deadSuffix: ":dead", maxStreams: 100, localOnly: true,
		every: 50 * time.Millisecond, window: 500 * time.Millisecond, metrics: metrics})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.run(ctx); close(done) }()
	server := httptest.NewServer(u)
	e.t.Cleanup(func() {
		server.Close()
		cancel()
		<-done
	})
	return server.URL
}

// getJSON GETs url and decodes its JSON answer into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", url, body)
	require.NoError(t, json.Unmarshal(body, v), "GET %s: %s", url, body)
}

// postReplay POSTs body to /api/replay as the page does (with the
// X-Redisbus-UI header when header is set) and returns the status and
// the answer.
func postReplay(t *testing.T, url, body string, header bool) (int, string) {
	t.Helper()
	return postReplayAs(t, url, "", body, header)
}

// postReplayAs is postReplay with host as the Host header, when set.
func postReplayAs(t *testing.T, url, host, body string, header bool) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/api/replay", strings.NewReader(body))
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", "application/json")
	if header {
		req.Header.Set(uiHeader, "1")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer)
}

// awaitState polls /api/state until ok accepts it, and returns it.
func awaitState(t *testing.T, url string, what string, ok func(uiState) bool) uiState {
	t.Helper()
	var state uiState
	require.Eventually(t, func() bool {
		state = uiState{}
		getJSON(t, url+"/api/state", &state)
		return ok(state)
	}, 15*time.Second, 20*time.Millisecond, "%s; last state: %+v", what, state)
	return state
}

func topicOf(state uiState, stream string) (uiTopic, bool) {
	for _, topic := range state.Topics {
		if topic.Stream == stream {
			return topic, true
		}
	}
	return uiTopic{}, false
}

func TestUIStateShowsStreamsAndKeepsEachGroupsLagForTheWindow(t *testing.T) {
	e := newEnv(t)
	_, sub := e.deadLetters("orders", 3)
	require.NoError(t, sub.Close())
	require.NoError(t, e.client.XGroupCreate(context.Background(), "orders", "audit", "0").Err()) // reads nothing: lags 3
	url := e.startUI()

	// The window (500 ms) holds 10 samples (every 50 ms): after more, 10.
	state := awaitState(t, url, "12 samples", func(s uiState) bool { return s.Samples >= 12 })
	assert.Empty(t, state.Error)
	require.Len(t, state.Topics, 1, "orders:dead is orders' dead letters, not a topic")
	orders := state.Topics[0]
	assert.Equal(t, "orders", orders.Stream)
	assert.EqualValues(t, 3, orders.Length)
	assert.EqualValues(t, 3, orders.DeadLetters)
	require.Len(t, orders.Groups, 2)
	assert.Equal(t, "audit", orders.Groups[0].Name)
	assert.EqualValues(t, 3, orders.Groups[0].Lag)
	assert.Equal(t, "workers", orders.Groups[1].Name)
	assert.EqualValues(t, 0, orders.Groups[1].Lag)
	audit := orders.LagHistory["audit"]
	require.Len(t, audit, 10, "a ring of window/every samples")
	for i, p := range audit {
		assert.EqualValues(t, 3, p.Lag)
		if i > 0 {
			assert.Greater(t, p.T, audit[i-1].T, "oldest first")
		}
	}
	assert.Len(t, orders.LagHistory["workers"], 10)

	// A group that goes away leaves the view and its history.
	require.NoError(t, e.client.XGroupDestroy(context.Background(), "orders", "audit").Err())
	state = awaitState(t, url, "audit gone", func(s uiState) bool {
		topic, ok := topicOf(s, "orders")
		return ok && len(topic.Groups) == 1
	})
	orders, _ = topicOf(state, "orders")
	assert.NotContains(t, orders.LagHistory, "audit")
	assert.False(t, state.Metrics.Enabled, "no --metrics")
}

func TestUIListsAndReplaysDeadLetters(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, sub := e.deadLetters("orders", 3)
	require.NoError(t, sub.Close())
	url := e.startUI()

	var dead uiDead
	getJSON(t, url+"/api/dead?topic=orders", &dead)
	assert.Equal(t, "orders:dead", dead.DeadLetterStream)
	require.Len(t, dead.Letters, 3)
	first := dead.Letters[0]
	assert.Equal(t, "orders", first.OriginStream)
	assert.Equal(t, "nacked 1 time (MaxDeliveries 1)", first.Reason)

	// What a page of another site can send: a POST without the header.
	code, answer := postReplay(t, url, `{"topic":"orders","all":true}`, false)
	assert.Equal(t, http.StatusForbidden, code, answer)
	assert.EqualValues(t, 3, e.client.XLen(ctx, "orders:dead").Val(), "refused: nothing moved")
	// What a DNS rebinding attack sends: the header, from a page whose host
	// name resolves to 127.0.0.1.
	code, answer = postReplayAs(t, url, "rebind.example:8090", `{"topic":"orders","all":true}`, true)
	assert.Equal(t, http.StatusForbidden, code, answer)
	assert.EqualValues(t, 3, e.client.XLen(ctx, "orders:dead").Val(), "refused: nothing moved")
	for _, host := range []string{"localhost:8090", "[::1]:8090", "127.0.0.1"} {
		assert.True(t, isLoopback(host), host)
	}
	for _, host := range []string{"0.0.0.0:8090", "[::]:8090", "10.1.2.3:8090", "localhost.example:8090"} {
		assert.False(t, isLoopback(host), host)
	}
	resp, err := http.Get(url + "/api/replay?topic=orders&all=true")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	for _, bad := range []string{`{"topic":"orders"}`, `{"topic":"orders","all":true,"ids":["1-1"]}`, `{"all":true}`, `not json`} {
		code, answer = postReplay(t, url, bad, true)
		assert.Equal(t, http.StatusBadRequest, code, "%s: %s", bad, answer)
	}

	// One by ID: back in orders (with its UUID), gone from orders:dead.
	code, answer = postReplay(t, url, `{"topic":"orders","ids":["`+first.ID+`"]}`, true)
	require.Equal(t, http.StatusOK, code, answer)
	var r ReplayResult
	require.NoError(t, json.Unmarshal([]byte(answer), &r))
	assert.Equal(t, 1, r.Replayed)
	assert.Equal(t, map[string]int{"orders": 1}, r.Streams)
	assert.EqualValues(t, 2, e.client.XLen(ctx, "orders:dead").Val())
	assert.Equal(t, 2, e.uuids("orders")[first.Message.UUID], "the original and the replayed entry")

	// Again: it is not a dead letter any more.
	code, answer = postReplay(t, url, `{"topic":"orders","ids":["`+first.ID+`"]}`, true)
	require.Equal(t, http.StatusOK, code, answer)
	r = ReplayResult{}
	require.NoError(t, json.Unmarshal([]byte(answer), &r))
	assert.Equal(t, 0, r.Replayed)
	assert.Equal(t, []string{first.ID}, r.Missing)

	code, answer = postReplay(t, url, `{"topic":"orders","all":true}`, true)
	require.Equal(t, http.StatusOK, code, answer)
	assert.EqualValues(t, 0, e.client.XLen(ctx, "orders:dead").Val())
	getJSON(t, url+"/api/dead?topic=orders", &dead)
	assert.Empty(t, dead.Letters)

	// The streams view shows the entries back in orders.
	awaitState(t, url, "no dead letters", func(s uiState) bool {
		topic, ok := topicOf(s, "orders")
		return ok && topic.DeadLetters == 0 && topic.Length == 6
	})
}

func TestUIScrapesTheRedisbusCountersOfEachMetricsURL(t *testing.T) {
	e := newEnv(t)
	_, sub := e.deadLetters("orders", 3)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // an application that is not running
	url := e.startUI(metricsOf(t, "orders-workers", sub), down.URL+"/metrics")

	state := awaitState(t, url, "rates of orders-workers", func(s uiState) bool {
		return len(s.Metrics.Groups) == 1 && len(s.Metrics.Groups[0].Rows) == 1 && s.Metrics.Groups[0].Rows[0].Rates[0] != nil
	})
	m := state.Metrics
	assert.True(t, m.Enabled)
	require.Len(t, m.Targets, 2)
	assert.Empty(t, m.Targets[0].Error)
	assert.Contains(t, m.Targets[1].Error, "connection refused")
	streams := m.Groups[0]
	assert.Equal(t, "Streams subscribers", streams.Title)
	assert.Equal(t, []string{"delivered", "acked", "nacked", "dead-lettered"}, streams.Columns)
	row := streams.Rows[0]
	assert.Equal(t, "orders-workers", row.Name)
	assert.Equal(t, []float64{3, 0, 3, 3}, row.Totals)
}

func TestUIRatesAreIncreasesPerSecondSummedOverApplications(t *testing.T) {
	u := newUI(nil, uiOptions{metrics: []string{"http://a/metrics", "http://b/metrics"}})
	delivered := seriesKey{"redisbus_streams_delivered_messages_total", "orders"}
	dropped := seriesKey{"redisbus_pubsub_dropped_messages_total", "chat"}
	start := time.Unix(1000, 0)
	status := u.rates([]map[seriesKey]float64{{delivered: 100}, {delivered: 50, dropped: 7}}, []error{nil, nil}, start)
	require.Len(t, status.Groups, 2)
	assert.Nil(t, status.Groups[0].Rows[0].Rates[0], "no rate from one scrape")
	assert.Equal(t, 150.0, status.Groups[0].Rows[0].Totals[0])

	// Two seconds later a delivered 20 more, b restarted (its counter
	// went down to 4) and dropped nothing.
	status = u.rates([]map[seriesKey]float64{{delivered: 120}, {delivered: 4, dropped: 7}}, []error{nil, nil}, start.Add(2*time.Second))
	streams, pubsub := status.Groups[0].Rows[0], status.Groups[1].Rows[0]
	require.NotNil(t, streams.Rates[0])
	assert.InDelta(t, (20.0+4.0)/2, *streams.Rates[0], 1e-9)
	assert.Nil(t, streams.Rates[1], "acked: not exposed")
	assert.Equal(t, "chat", pubsub.Name)
	require.NotNil(t, pubsub.Rates[1])
	assert.Zero(t, *pubsub.Rates[1])

	// A failed scrape of b: its series start again from the next one.
	status = u.rates([]map[seriesKey]float64{{delivered: 130}, nil}, []error{nil, errors.New("refused")}, start.Add(3*time.Second))
	assert.Equal(t, "refused", status.Targets[1].Error)
	assert.InDelta(t, 10.0, *status.Groups[0].Rows[0].Rates[0], 1e-9)
}

// metricsOf serves, as an application would, the redisbusprom metrics of
// sub under name, and returns their URL.
func metricsOf(t *testing.T, name string, sub *redisbus.StreamsSubscriber) string {
	t.Helper()
	collector, err := redisbusprom.NewCollector(redisbusprom.Config{})
	require.NoError(t, err)
	require.NoError(t, collector.AddStreamsSubscriber(name, sub))
	registry := prometheus.NewRegistry()
	registry.MustRegister(collector)
	app := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	t.Cleanup(app.Close)
	return app.URL + "/metrics"
}

// runUI runs `redisbus ui` against the env's Redis on a free port and
// returns the page's URL; the test's end interrupts it, as Ctrl-C does,
// and requires a clean exit.
func (e *env) runUI(args ...string) string {
	e.t.Helper()
	cmd := exec.Command(binary, append([]string{"-redis", e.url, "ui", "-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "REDIS_URL=")
	var stderr pubsubtest.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(e.t, err)
	require.NoError(e.t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		assert.NoError(e.t, <-exited, "redisbus ui after Ctrl-C; stderr: %s", stderr.String())
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(e.t, err, "stderr: %s", stderr.String())
	_, url, ok := strings.Cut(strings.TrimSpace(line), "listening on ")
	require.True(e.t, ok, "first line: %q", line)
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return strings.TrimSuffix(url, "/")
}

func TestUICommandServesThePageUntilInterrupted(t *testing.T) {
	e := newEnv(t)
	e.xadd("orders", "payload", "x")
	url := e.runUI("--every", "100ms")

	resp, err := http.Get(url + "/")
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	assert.Contains(t, string(page), "--metrics http://app:8080/metrics", "says how to see live counters")
	assert.NotRegexp(t, `(src|href)="(https?:)?//`, string(page), "no external assets")

	state := awaitState(t, url, "orders", func(s uiState) bool { _, ok := topicOf(s, "orders"); return ok })
	assert.Equal(t, int64(100), state.EveryMS)

	r := e.run("", "ui", "--every", "1ms")
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--every must be at least 100ms")
}
