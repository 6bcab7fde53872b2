package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(nodeProcessEnv) != "" {
		runNodeProcess() // a node of the multi-process tests
		return
	}
	pubsubtest.Main(m)
}

// addresses matches what changes between runs: ports and embedded Redis
// addresses.
var addresses = regexp.MustCompile(`(127\.0\.0\.1|localhost):\d+`)

// The two-node start-up lines come in one order on every run, each node's
// URL first and "passed" last, against the embedded Redis and a real one.
func TestStartupCheckPrintsItsLinesInOneOrder(t *testing.T) {
	const want = `node node-a listening on http://127.0.0.1:PORT
node node-b listening on http://127.0.0.1:PORT
start-up check: Redis at 127.0.0.1:PORT answers
start-up check: node-a's greeting reached 2 node(s) over Pub/Sub
start-up check: node-b's greeting reached 2 node(s) over Pub/Sub
start-up check: node-a heard the greetings of node-a, node-b and a non-Watermill producer
start-up check: node-b heard the greetings of node-a, node-b and a non-Watermill producer
start-up check: node-b routed a message through Redis to a WebSocket client of node-a
start-up check: node-a routed a message through Redis to a WebSocket client of node-b
start-up check passed: both nodes hear each other through Redis
`
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{}) // no other demo nodes listening
	for name, redisURL := range map[string]string{
		"embedded Redis": "",
		"redis-server":   server.URL,
	} {
		t.Run(name, func(t *testing.T) {
			for nth := 1; nth <= 3; nth++ {
				var out pubsubtest.SyncBuffer
				require.NoError(t, run(t.Context(), &out, options{redisURL: redisURL, addrA: "127.0.0.1:0", addrB: "127.0.0.1:0", check: true}))
				text := addresses.ReplaceAllString(out.String(), "127.0.0.1:PORT")
				if name == "embedded Redis" {
					embedded, rest, _ := strings.Cut(text, "\n")
					assert.Equal(t, "REDIS_URL is not set: using an embedded Redis at 127.0.0.1:PORT", embedded)
					text = rest
				}
				assert.Equal(t, want, text, "run %d", nth)
			}
		})
	}
}

// A node of its own (-node) listening on every interface prints a URL a
// browser opens, runs the start-up check against itself before it says
// to open it, and speaks of one URL.
func TestOneNodeProcessPrintsAURLABrowserOpens(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	out := &lineWaiter{line: "open ", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, out, options{redisURL: server.URL, node: "a", addr: ":0", nodeTTL: time.Second})
	}()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log(text)
	url := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(text)[1]
	assert.Regexp(t, `^http://localhost:\d+$`, url, "not [::], which a browser cannot open")
	want := `node a listening on {url}
start-up check: Redis at {addr} answers
start-up check: a's greeting reached 1 node(s) over Pub/Sub
start-up check: a heard the greetings of a and a non-Watermill producer
start-up check: a routed a message through Redis to a WebSocket client of its own
start-up check passed: node a is ready
Prometheus metrics of a: {url}/metrics
open {url} in a browser tab; a second node (the same REDIS_URL, another -node and -addr) serves a second tab; Ctrl-C stops
`
	want = strings.NewReplacer("{url}", url, "{addr}", server.Addr).Replace(want)
	assert.Equal(t, want, text)

	resp, err := http.Get(url)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// The series a user looks for first: the orders group, the node's
	// routing, Watermill's handler timings.
	resp, err = http.Get(url + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	for _, series := range []string{
		`redisbus_stream_group_pending_entries{group="demo-processors",stream="demo:orders"}`,
		`redisbus_wsroute_connections{name="a"}`,
		`redisbus_pubsub_received_messages_total{name="redisbus.Subscriber"}`,
		`handler_execution_time_seconds_count{handler_name="greetings",success="true"}`,
	} {
		assert.Contains(t, string(body), series)
	}
	cancel()
	require.NoError(t, <-done)
}

// Nothing is announced when Redis does not answer: the error says where.
func TestStartupFailsWhenRedisDoesNotAnswer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	var out pubsubtest.SyncBuffer
	err = run(t.Context(), &out, options{redisURL: "redis://" + addr, node: "a", addr: "127.0.0.1:0"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no answer from Redis at "+addr)
	assert.Empty(t, out.String())
}

// lineWaiter is a SyncBuffer that closes seen once a line starting with
// line was written.
type lineWaiter struct {
	pubsubtest.SyncBuffer
	line string
	seen chan struct{}
	once sync.Once
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	n, err := w.SyncBuffer.Write(p)
	for l := range strings.Lines(w.String()) {
		if strings.HasPrefix(l, w.line) {
			w.once.Do(func() { close(w.seen) })
		}
	}
	return n, err
}

func TestNodeModeNeedsRedisURL(t *testing.T) {
	err := run(t.Context(), &pubsubtest.SyncBuffer{}, options{node: "a"})
	assert.ErrorContains(t, err, "REDIS_URL")
}

// A REDIS_URL that does not parse is reported without its password: the
// error goes to a terminal, a CI log or a crash reporter.
func TestBadRedisURLDoesNotPrintThePassword(t *testing.T) {
	var out pubsubtest.SyncBuffer
	err := run(t.Context(), &out, options{redisURL: "redis://admin:hunter2-secret@127.0.0.1:63x9/0", check: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "REDIS_URL")
	assert.NotContains(t, err.Error()+out.String(), "hunter2-secret")
	assert.NotContains(t, err.Error()+out.String(), "admin")
}
