package redisbusprom

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

var (
	streamLength = prometheus.NewDesc("redisbus_stream_length_entries",
		"Entries in the stream (XLEN).", []string{"stream"}, nil)
	deadLetterLength = prometheus.NewDesc("redisbus_stream_dead_letter_entries",
		"Entries in the stream's dead-letter stream.", []string{"stream", "dead_letter_stream"}, nil)
	groupLag = prometheus.NewDesc("redisbus_stream_group_lag_entries",
		"Entries of the stream the consumer group has not read yet (XINFO GROUPS lag, Redis 7.0+; absent when Redis cannot tell).",
		[]string{"stream", "group"}, nil)
	groupPending = prometheus.NewDesc("redisbus_stream_group_pending_entries",
		"Entries read by the group's consumers and not acked yet.", []string{"stream", "group"}, nil)
	groupConsumers = prometheus.NewDesc("redisbus_stream_group_consumers",
		"Consumers Redis lists in the group: those that have read from it, live or not, until removed (ConsumerIdleTimeout).",
		[]string{"stream", "group"}, nil)
	groupOldestPending = prometheus.NewDesc("redisbus_stream_group_oldest_pending_age_seconds",
		"Age of the group's oldest pending entry, from its ID's timestamp (0 when nothing is pending).",
		[]string{"stream", "group"}, nil)
	consumerPending = prometheus.NewDesc("redisbus_stream_consumer_pending_entries",
		"Entries pending with each consumer of the group.", []string{"stream", "group", "consumer"}, nil)
	delayedEntries = prometheus.NewDesc("redisbus_stream_delayed_entries",
		"Delayed messages of the stream waiting for their due time (Watermill's delay metadata).", []string{"stream"}, nil)
	delayedNextDue = prometheus.NewDesc("redisbus_stream_delayed_next_due_timestamp_seconds",
		"Due time of the stream's earliest delayed message, Unix seconds (absent when none waits); time() minus it is how overdue it is.",
		[]string{"stream"}, nil)
	scrapeErrors = prometheus.NewDesc("redisbus_scrape_errors_total",
		"Refreshes of the stream views that failed (Redis unreachable), and scrapes that stopped waiting for one after ScrapeTimeout.", nil, nil)
	scrapeSuccess = prometheus.NewDesc("redisbus_scrape_success",
		"1 when this scrape carries stream views (fresh, or cached from a good refresh), 0 when it has none.", nil, nil)
	scrapeDuration = prometheus.NewDesc("redisbus_scrape_duration_seconds",
		"How long the last refresh of the stream views took.", nil, nil)
	omittedStreams = prometheus.NewDesc("redisbus_scrape_omitted_streams",
		"Streams left out of the views because of Config.MaxStreams.", nil, nil)
)

func viewDescs() []*prometheus.Desc {
	return []*prometheus.Desc{streamLength, deadLetterLength, delayedEntries, delayedNextDue, groupLag, groupPending, groupConsumers,
		groupOldestPending, consumerPending, scrapeErrors, scrapeSuccess, scrapeDuration, omittedStreams}
}

// watchedStream is a stream and its dead-letter stream.
type watchedStream struct{ name, deadLetter string }

// streamViews reads the streams' state from Redis and caches it.
//
// A refresh runs in a goroutine of its own, and a scrape waits for it at
// most ScrapeTimeout: go-redis ends a command at the client's own timeouts
// (and retries), not at a context's deadline, so only waiting apart keeps
// a scrape within its bound. One refresh runs at a time; scrapes meanwhile
// wait for that one.
type streamViews struct {
	config  *Config
	streams func() []watchedStream

	mu          sync.Mutex
	running     chan struct{} // closed when the refresh under way ends; nil when none is
	timedOut    chan struct{} // the running refresh already counted as an error by a scrape
	cached      []prometheus.Metric
	cachedOK    bool // cached comes from a refresh that succeeded
	refreshedAt time.Time
	errors      uint64
	took        time.Duration
	omitted     int
	loggedCap   bool
	// loggedKeys are watched streams whose key is not a stream, logged once.
	loggedKeys map[string]bool
}

func newStreamViews(config *Config, streams func() []watchedStream) *streamViews {
	return &streamViews{config: config, streams: streams}
}

func (v *streamViews) collect(ch chan<- prometheus.Metric) {
	if v.config.Client == nil {
		return
	}
	v.mu.Lock()
	stale := v.refreshedAt.IsZero() || v.config.CacheFor < 0 || time.Since(v.refreshedAt) >= v.config.CacheFor
	if stale && v.running == nil {
		v.running = make(chan struct{})
		go v.refreshInBackground(v.running)
	}
	running := v.running
	v.mu.Unlock()

	timedOut := false
	if running != nil {
		timer := time.NewTimer(v.config.ScrapeTimeout)
		select {
		case <-running:
		case <-timer.C:
			timedOut = true
		}
		timer.Stop()
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	success := 0.0
	if timedOut {
		v.errors++
		v.timedOut = running
	} else {
		for _, m := range v.cached {
			ch <- m
		}
		if v.cachedOK {
			success = 1
		}
	}
	ch <- prometheus.MustNewConstMetric(scrapeSuccess, prometheus.GaugeValue, success)
	ch <- prometheus.MustNewConstMetric(scrapeErrors, prometheus.CounterValue, float64(v.errors))
	ch <- prometheus.MustNewConstMetric(scrapeDuration, prometheus.GaugeValue, v.took.Seconds())
	ch <- prometheus.MustNewConstMetric(omittedStreams, prometheus.GaugeValue, float64(v.omitted))
}

func (v *streamViews) refreshInBackground(done chan struct{}) {
	start := time.Now()
	metrics, err := v.refresh()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.took, v.refreshedAt = time.Since(start), time.Now()
	// A failure is cached too: a Redis that is down is not asked again at
	// every scrape.
	v.cached, v.cachedOK = metrics, err == nil
	if err != nil {
		if v.timedOut != done { // not counted by a scrape that gave up on it
			v.errors++
		}
		v.config.Logger.Error("redisbusprom: cannot read the streams' state", err, nil)
	}
	v.running = nil
	close(done)
}

// refresh reads every watched stream in two pipelined round trips: lengths
// and groups first, then the pending summary of each group with pending
// entries.
func (v *streamViews) refresh() ([]prometheus.Metric, error) {
	// The deadline ends the wait for a connection; commands end at the
	// client's own timeouts.
	ctx, cancel := context.WithTimeout(context.Background(), v.config.ScrapeTimeout)
	defer cancel()
	streams := v.streams()
	omitted := max(len(streams)-v.config.MaxStreams, 0)
	v.mu.Lock()
	v.omitted = omitted
	logCap := omitted > 0 && !v.loggedCap
	v.loggedCap = v.loggedCap || logCap
	v.mu.Unlock()
	if omitted > 0 {
		if logCap {
			v.config.Logger.Info("redisbusprom: more streams than MaxStreams; the rest are left out",
				watermill.LogFields{"streams": len(streams), "max_streams": v.config.MaxStreams})
		}
		streams = streams[:v.config.MaxStreams]
	}
	if len(streams) == 0 {
		return nil, nil
	}

	type read struct {
		length, deadLetter, delayed *redis.IntCmd
		nextDue                     *redis.ZSliceCmd
		groups                      *redis.XInfoGroupsCmd
	}
	reads := make([]read, len(streams))
	pipe := v.config.Client.Pipeline()
	for i, s := range streams {
		delayed := redisbus.DelayedKey(s.name)
		reads[i] = read{pipe.XLen(ctx, s.name), pipe.XLen(ctx, s.deadLetter), pipe.ZCard(ctx, delayed),
			pipe.ZRangeWithScores(ctx, delayed, 0, 0), pipe.XInfoGroups(ctx, s.name)}
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return nil, err
	}

	var metrics []prometheus.Metric
	type pendingRead struct {
		stream, group string
		summary       *redis.XPendingCmd
	}
	var pending []pendingRead
	pipe = v.config.Client.Pipeline()
	for i, s := range streams {
		r := reads[i]
		if err := r.length.Err(); err != nil { // a key of another type
			v.logNotAStream(s.name, err)
			continue
		}
		if r.deadLetter.Err() == nil {
			metrics = append(metrics, prometheus.MustNewConstMetric(deadLetterLength, prometheus.GaugeValue,
				float64(r.deadLetter.Val()), s.name, s.deadLetter))
		}
		if r.delayed.Err() == nil {
			metrics = append(metrics, prometheus.MustNewConstMetric(delayedEntries, prometheus.GaugeValue, float64(r.delayed.Val()), s.name))
		}
		if next := r.nextDue.Val(); len(next) > 0 {
			metrics = append(metrics, prometheus.MustNewConstMetric(delayedNextDue, prometheus.GaugeValue, next[0].Score/1000, s.name))
		}
		groups, err := r.groups.Result()
		if err != nil { // no such stream (yet): no length either, which would read as an empty stream
			continue
		}
		metrics = append(metrics,
			prometheus.MustNewConstMetric(streamLength, prometheus.GaugeValue, float64(r.length.Val()), s.name))
		for _, g := range groups {
			metrics = append(metrics,
				prometheus.MustNewConstMetric(groupPending, prometheus.GaugeValue, float64(g.Pending), s.name, g.Name),
				prometheus.MustNewConstMetric(groupConsumers, prometheus.GaugeValue, float64(g.Consumers), s.name, g.Name))
			if g.Lag >= 0 {
				metrics = append(metrics, prometheus.MustNewConstMetric(groupLag, prometheus.GaugeValue, float64(g.Lag), s.name, g.Name))
			}
			if g.Pending == 0 {
				metrics = append(metrics, prometheus.MustNewConstMetric(groupOldestPending, prometheus.GaugeValue, 0, s.name, g.Name))
				continue
			}
			pending = append(pending, pendingRead{s.name, g.Name, pipe.XPending(ctx, s.name, g.Name)})
		}
	}
	if len(pending) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
			return nil, err
		}
	}
	now := time.Now()
	for _, p := range pending {
		summary, err := p.summary.Result()
		if err != nil { // the group went away in between
			continue
		}
		metrics = append(metrics, prometheus.MustNewConstMetric(groupOldestPending, prometheus.GaugeValue,
			entryAge(summary.Lower, now).Seconds(), p.stream, p.group))
		for consumer, count := range summary.Consumers {
			metrics = append(metrics, prometheus.MustNewConstMetric(consumerPending, prometheus.GaugeValue,
				float64(count), p.stream, p.group, consumer))
		}
	}
	return metrics, nil
}

// logNotAStream logs, once per key, a watched stream whose key holds
// something else.
func (v *streamViews) logNotAStream(key string, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.loggedKeys == nil {
		v.loggedKeys = map[string]bool{}
	}
	if !v.loggedKeys[key] {
		v.loggedKeys[key] = true
		v.config.Logger.Error("redisbusprom: a watched stream's key is not a stream; left out", err, watermill.LogFields{"key": key})
	}
}

// isReplyError reports whether a pipeline's error is Redis' reply to one
// command (no such key, a wrong type), which concerns one stream, rather
// than the connection's, which fails them all.
func isReplyError(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply) && !errors.Is(err, context.DeadlineExceeded)
}

// entryAge returns how long ago the entry with this ID was added.
func entryAge(id string, now time.Time) time.Duration {
	ms, _, _ := strings.Cut(id, "-")
	millis, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return 0
	}
	return max(now.Sub(time.UnixMilli(millis)), 0)
}
