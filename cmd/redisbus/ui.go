package main

// redisbus ui: the console's views as a web page. The server samples the
// streams view every few seconds (so that any number of open pages costs
// Redis the same), keeps each group's lag over the last minutes, scrapes
// the applications' /metrics for rates, and replays dead letters with the
// same code as `redisbus replay`.

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

//go:embed ui.html
var uiPage []byte

// uiOptions are the flags of redisbus ui.
type uiOptions struct {
	addr       string
	match      string
	deadSuffix string
	maxStreams int
	every      time.Duration // between samples of the streams view
	window     time.Duration // of lag history kept per group
	metrics    []string      // URLs of applications' /metrics
	// localOnly is set when the server listens on loopback: then replays
	// must name a loopback host, which a DNS rebinding attack cannot.
	localOnly bool
}

func newUICommand(c *console) *cobra.Command {
	o := uiOptions{}
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the streams, their lag, dead letters and live counters as a web page",
		Long: `Serve the console's views as a web page: every stream with its groups and
their lag over the last minutes, the dead letters with a Replay button, and
with --metrics the rates of the redisbus counters of your applications.

The page has no authentication: it listens on 127.0.0.1 by default. To
reach it from elsewhere, put it behind a proxy that authenticates.
Replay requests must be POSTs carrying the X-Redisbus-UI header, which a
page of another site cannot send; on 127.0.0.1 they must also name a
loopback host (Host header), which defeats DNS rebinding.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&o.addr, "addr", "127.0.0.1:8090", "listen on this address (:8090 listens on every interface)")
	cmd.Flags().StringArrayVar(&o.metrics, "metrics", nil, "scrape this Prometheus /metrics URL of an application for live counters (repeatable)")
	cmd.Flags().StringVar(&o.match, "match", "*", "only streams whose names match this SCAN pattern")
	cmd.Flags().StringVar(&o.deadSuffix, "dead-suffix", ":dead", "streams named TOPIC+this are TOPIC's dead letters")
	cmd.Flags().IntVar(&o.maxStreams, "max-streams", 100, "show at most this many topics")
	cmd.Flags().DurationVar(&o.every, "every", 5*time.Second, "read the streams (and scrape --metrics) this often")
	cmd.Flags().DurationVar(&o.window, "window", 10*time.Minute, "keep each group's lag for this long")
	validate := func([]string) error {
		switch {
		case o.every < 100*time.Millisecond:
			return usagef("--every must be at least 100ms")
		case o.window < o.every:
			return usagef("--window must be at least --every")
		case o.maxStreams < 1:
			return usagef("--max-streams must be at least 1")
		}
		return nil
	}
	cmd.RunE = c.command(validate, func(ctx context.Context, _ []string) error {
		listener, err := net.Listen("tcp", o.addr)
		if err != nil {
			return failf(exitFailure, "%v", err)
		}
		o.localOnly = isLoopback(listener.Addr().String())
		u := newUI(c.client, o)
		server := &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
		ctx, cancel := context.WithCancel(ctx) // a failed Serve stops the sampler too
		defer cancel()
		sampled := make(chan struct{})
		go func() { u.run(ctx); close(sampled) }()
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = server.Shutdown(shutdown)
		}()
		fmt.Fprintf(c.stdout, "redisbus ui listening on http://%s/\n", listener.Addr())
		if !o.localOnly {
			c.notef("(the page has no authentication: anyone who reaches %s can replay dead letters)", listener.Addr())
		}
		if len(o.metrics) == 0 {
			c.notef("(no --metrics: the page shows no live counters)")
		}
		err = server.Serve(listener)
		cancel()
		<-sampled
		if errors.Is(err, http.ErrServerClosed) {
			return nil // Ctrl-C is how ui ends
		}
		return err
	})
	return cmd
}

// ui is the web page's server.
type ui struct {
	client redis.UniversalClient
	opts   uiOptions
	mux    *http.ServeMux
	wake   chan struct{} // asks for a sample now (after a replay)

	mu        sync.Mutex
	state     uiState
	lag       map[groupKey]*lagHistory
	previous  map[string]map[seriesKey]float64 // per metrics URL: the last scrape
	scrapedAt map[string]time.Time
}

type groupKey struct{ stream, group string }

// seriesKey is a counter of a component, as the metrics name it.
type seriesKey struct{ metric, name string }

// uiState is what GET /api/state returns: the last sample.
type uiState struct {
	SampledAt time.Time     `json:"sampled_at"` // of the last attempt, good or failed
	ViewedAt  time.Time     `json:"viewed_at"`  // of the last good view, which Topics are
	Samples   int           `json:"samples"`
	Error     string        `json:"error,omitempty"` // of the last sample
	Truncated bool          `json:"truncated"`       // more topics than --max-streams
	EveryMS   int64         `json:"every_ms"`
	WindowMS  int64         `json:"window_ms"`
	Topics    []uiTopic     `json:"topics"`
	Metrics   metricsStatus `json:"metrics"`
}

// uiTopic is a topic of the streams view with its groups' lag history.
type uiTopic struct {
	StreamSummary
	LagHistory map[string][]lagPoint `json:"lag_history"` // by group
}

// lagPoint is a group's lag at a time (unix ms); Lag -1: Redis could not tell.
type lagPoint struct {
	T   int64 `json:"t"`
	Lag int64 `json:"lag"`
}

// lagHistory is a ring of a group's last lag samples.
type lagHistory struct {
	points []lagPoint
	next   int
	full   bool
}

func (h *lagHistory) add(p lagPoint) {
	h.points[h.next] = p
	h.next = (h.next + 1) % len(h.points)
	h.full = h.full || h.next == 0
}

// oldestFirst returns a copy of the samples, oldest first.
func (h *lagHistory) oldestFirst() []lagPoint {
	if !h.full {
		return slices.Clone(h.points[:h.next])
	}
	return append(slices.Clone(h.points[h.next:]), h.points[:h.next]...)
}

// metricsStatus is the live counters section: the rates of the main
// redisbus counters, summed over the scraped applications.
type metricsStatus struct {
	Enabled bool            `json:"enabled"`
	Targets []metricsTarget `json:"targets"`
	Groups  []counterGroup  `json:"groups"`
}

type metricsTarget struct {
	URL   string `json:"url"`
	Error string `json:"error,omitempty"`
}

// counterGroup is a table: a row per component name, a column per counter.
type counterGroup struct {
	Title   string       `json:"title"`
	Columns []string     `json:"columns"`
	Rows    []counterRow `json:"rows"`
}

type counterRow struct {
	Name string `json:"name"`
	// Rates are per second since the previous scrape (nil before the
	// second scrape); Totals are the counters' values.
	Rates  []*float64 `json:"rates"`
	Totals []float64  `json:"totals"`
}

// uiCounters are the counters the page shows, by table.
var uiCounters = []struct {
	title   string
	columns []string
	metrics []string
}{
	{"Streams subscribers", []string{"delivered", "acked", "nacked", "dead-lettered"}, []string{
		"redisbus_streams_delivered_messages_total", "redisbus_streams_acked_messages_total",
		"redisbus_streams_nacked_messages_total", "redisbus_streams_dead_lettered_entries_total"}},
	{"Pub/Sub subscribers", []string{"delivered", "dropped"}, []string{
		"redisbus_pubsub_delivered_messages_total", "redisbus_pubsub_dropped_messages_total"}},
	{"wsroute nodes", []string{"routed", "offline"}, []string{
		"redisbus_wsroute_routed_messages_total", "redisbus_wsroute_offline_messages_total"}},
}

func newUI(client redis.UniversalClient, opts uiOptions) *ui {
	u := &ui{
		client:    client,
		opts:      opts,
		mux:       http.NewServeMux(),
		wake:      make(chan struct{}, 1),
		lag:       map[groupKey]*lagHistory{},
		previous:  map[string]map[seriesKey]float64{},
		scrapedAt: map[string]time.Time{},
	}
	u.state = uiState{Topics: []uiTopic{}, EveryMS: opts.every.Milliseconds(), WindowMS: opts.window.Milliseconds(),
		Metrics: metricsStatus{Enabled: len(opts.metrics) > 0, Targets: []metricsTarget{}, Groups: []counterGroup{}}}
	u.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(uiPage)
	})
	u.mux.HandleFunc("GET /api/state", u.handleState)
	u.mux.HandleFunc("GET /api/dead", u.handleDead)
	u.mux.HandleFunc("POST /api/replay", u.handleReplay)
	return u
}

// ServeHTTP forbids framing (no other site may overlay the page to trick
// a click on Replay all) and, on loopback, serves only requests addressed
// to a loopback name: a DNS rebinding page, whose Host is its own name,
// can then read nothing (state, dead letters) nor replay.
func (u *ui) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if u.opts.localOnly && !isLoopback(r.Host) {
		http.Error(w, "the UI listens on loopback: open it as localhost or 127.0.0.1, not "+r.Host, http.StatusForbidden)
		return
	}
	u.mux.ServeHTTP(w, r)
}

// run samples the streams and the metrics every opts.every, and when a
// replay asks, until ctx ends.
func (u *ui) run(ctx context.Context) {
	ticker := time.NewTicker(u.opts.every)
	defer ticker.Stop()
	for {
		u.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-u.wake:
		}
	}
}

// sample reads the streams view and scrapes the metrics once.
func (u *ui) sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(u.opts.every, 5*time.Second))
	defer cancel()
	topics, truncated, err := StreamsView(ctx, u.client, u.opts.match, u.opts.deadSuffix, u.opts.maxStreams)
	scrapes := make([]map[seriesKey]float64, len(u.opts.metrics))
	scrapeErrs := make([]error, len(u.opts.metrics))
	var wg sync.WaitGroup
	for i, url := range u.opts.metrics {
		wg.Go(func() { scrapes[i], scrapeErrs[i] = scrape(ctx, url) })
	}
	wg.Wait()
	now := time.Now()

	u.mu.Lock()
	defer u.mu.Unlock()
	u.state.Samples++
	u.state.SampledAt = now
	u.state.Error = ""
	if err != nil {
		u.state.Error = err.Error() // the page keeps showing the last good view
	} else {
		u.state.ViewedAt = now
		u.state.Truncated = truncated
		u.state.Topics = u.recordLag(topics, now)
	}
	u.state.Metrics = u.rates(scrapes, scrapeErrs, now)
}

// recordLag adds the groups' lag to their histories, forgets the groups
// that are gone, and returns the topics with their histories.
func (u *ui) recordLag(topics []StreamSummary, now time.Time) []uiTopic {
	size := int(u.opts.window / u.opts.every)
	seen := map[groupKey]bool{}
	out := make([]uiTopic, len(topics))
	for i, t := range topics {
		out[i] = uiTopic{StreamSummary: t, LagHistory: map[string][]lagPoint{}}
		for _, g := range t.Groups {
			key := groupKey{t.Stream, g.Name}
			h := u.lag[key]
			if h == nil {
				h = &lagHistory{points: make([]lagPoint, size)}
				u.lag[key] = h
			}
			h.add(lagPoint{T: now.UnixMilli(), Lag: g.Lag})
			seen[key] = true
			out[i].LagHistory[g.Name] = h.oldestFirst()
		}
	}
	for key := range u.lag {
		if !seen[key] {
			delete(u.lag, key)
		}
	}
	return out
}

// rates turns this round of scrapes into the counters tables; the rate of
// a counter is its increase since the previous scrape of the same URL (a
// counter that went down restarted: its value is the increase).
func (u *ui) rates(scrapes []map[seriesKey]float64, errs []error, now time.Time) metricsStatus {
	status := metricsStatus{Enabled: len(u.opts.metrics) > 0, Targets: []metricsTarget{}, Groups: []counterGroup{}}
	totals := map[seriesKey]float64{}
	rates := map[seriesKey]float64{}
	hasRate := map[seriesKey]bool{}
	for i, url := range u.opts.metrics {
		target := metricsTarget{URL: url}
		if errs[i] != nil {
			target.Error = errs[i].Error()
			delete(u.previous, url)
			status.Targets = append(status.Targets, target)
			continue
		}
		status.Targets = append(status.Targets, target)
		previous, seconds := u.previous[url], now.Sub(u.scrapedAt[url]).Seconds()
		for key, value := range scrapes[i] {
			totals[key] += value
			if before, ok := previous[key]; ok && seconds > 0 {
				increase := value - before
				if increase < 0 {
					increase = value
				}
				rates[key] += increase / seconds
				hasRate[key] = true
			}
		}
		u.previous[url], u.scrapedAt[url] = scrapes[i], now
	}
	for _, table := range uiCounters {
		names := map[string]bool{}
		for key := range totals {
			if slices.Contains(table.metrics, key.metric) {
				names[key.name] = true
			}
		}
		if len(names) == 0 {
			continue
		}
		group := counterGroup{Title: table.title, Columns: table.columns, Rows: []counterRow{}}
		for _, name := range sortedKeys(names) {
			row := counterRow{Name: name}
			for _, metric := range table.metrics {
				key := seriesKey{metric, name}
				var rate *float64
				if hasRate[key] {
					r := rates[key]
					rate = &r
				}
				row.Rates = append(row.Rates, rate)
				row.Totals = append(row.Totals, totals[key])
			}
			group.Rows = append(group.Rows, row)
		}
		status.Groups = append(status.Groups, group)
	}
	return status
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// scrape reads the counters of uiCounters from a Prometheus text
// exposition, by metric and component name.
func scrape(ctx context.Context, url string) (map[seriesKey]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4") // the text format, which expfmt.TextParser reads
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	values := map[seriesKey]float64{}
	for _, table := range uiCounters {
		for _, metric := range table.metrics {
			family := families[metric]
			if family == nil {
				continue
			}
			for _, m := range family.GetMetric() {
				name := ""
				for _, label := range m.GetLabel() {
					if label.GetName() == "name" {
						name = label.GetValue()
					}
				}
				values[seriesKey{metric, name}] += m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			}
		}
	}
	return values, nil
}

func (u *ui) handleState(w http.ResponseWriter, _ *http.Request) {
	u.mu.Lock()
	data, err := json.Marshal(u.state)
	u.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

// deadLimit bounds the dead letters the page lists per topic.
const deadLimit = 100

// uiDead is what GET /api/dead?topic=TOPIC returns.
type uiDead struct {
	Topic            string       `json:"topic"`
	DeadLetterStream string       `json:"dead_letter_stream"`
	Letters          []DeadLetter `json:"letters"`
	More             bool         `json:"more"` // there are more than listed
}

func (u *ui) handleDead(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	if topic == "" {
		http.Error(w, "say which topic: ?topic=TOPIC", http.StatusBadRequest)
		return
	}
	dead := topic + u.opts.deadSuffix
	letters, more, err := DeadView(r.Context(), u.client, dead, selection{all: true}, deadLimit)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	writeJSON(w, uiDead{Topic: topic, DeadLetterStream: dead, Letters: letters, More: more})
}

// replayRequest is the body of POST /api/replay: the dead letters of
// Topic to move back to their streams, by ID or All.
type replayRequest struct {
	Topic string   `json:"topic"`
	IDs   []string `json:"ids"`
	All   bool     `json:"all"`
}

// uiHeader must be on state-changing requests: a page of another site
// cannot send a custom header without a CORS preflight, which this server
// does not answer, so a form or script there cannot replay.
const uiHeader = "X-Redisbus-UI"

func (u *ui) handleReplay(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(uiHeader) == "" {
		http.Error(w, "missing the "+uiHeader+" header (cross-site requests are refused)", http.StatusForbidden)
		return
	}
	var req replayRequest
	decoder := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	decoder.DisallowUnknownFields() // a misspelt or unsupported field ("to") must not replay elsewhere than meant
	if err := decoder.Decode(&req); err != nil {
		http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Topic == "" || req.All == (len(req.IDs) > 0) { // IDs or all, not both
		http.Error(w, `say which dead letters: {"topic": T, "ids": [...]} or {"topic": T, "all": true}`, http.StatusBadRequest)
		return
	}
	dead := req.Topic + u.opts.deadSuffix
	exists, err := u.client.Exists(r.Context(), dead).Result()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if exists == 0 {
		http.Error(w, "topic "+req.Topic+" has no dead letters: there is no stream "+dead, http.StatusNotFound)
		return
	}
	result, err := replay(r.Context(), u.client, dead, "", selection{ids: req.IDs, all: req.All}, false, 100, func(int) {})
	select {
	case u.wake <- struct{}{}: // show the streams as the replay left them
	default:
	}
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": err.Error(), "result": result})
		return
	}
	writeJSON(w, result)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// isLoopback reports whether hostport (a listener's address or a Host
// header, with or without a port) names this machine only.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.Trim(hostport, "[]") // no port
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
