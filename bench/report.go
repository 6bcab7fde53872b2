package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// report turns samples into BENCHMARKS.md and a chart.
type report struct {
	o       options
	samples []sample
	machine string
	elapsed time.Duration
	when    time.Time
}

func newReport(o options, samples []sample, machine string, elapsed time.Duration) *report {
	return &report{o: o, samples: samples, machine: machine, elapsed: elapsed, when: time.Now()}
}

// stat is the median and range of one measure over the rounds.
type stat struct{ median, lo, hi float64 }

func (r *report) stat(workload string, size int, contender string, measure func(sample) float64) (stat, bool) {
	var values []float64
	for _, s := range r.samples {
		if s.workload == workload && s.size == size && s.contender == contender {
			values = append(values, measure(s))
		}
	}
	if len(values) == 0 {
		return stat{}, false
	}
	sort.Float64s(values)
	return stat{median: values[len(values)/2], lo: values[0], hi: values[len(values)-1]}, true
}

func (st stat) rate() string {
	if st.lo == st.hi {
		return human(st.median)
	}
	return fmt.Sprintf("%s (%s–%s)", human(st.median), human(st.lo), human(st.hi))
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func (r *report) contenders(workload string) []string {
	var names []string
	seen := map[string]bool{}
	for _, s := range r.samples {
		if s.workload == workload && !seen[s.contender] {
			seen[s.contender] = true
			names = append(names, s.contender)
		}
	}
	return names
}

const (
	w1 = "publish then consume"
	w2 = "publish and consume at once"
	w3 = "batched publish (100 per call)"
)

// Contender names the floors refer to.
const (
	cPubSub = "redisbus Pub/Sub"
	// Publish returns once queued (PublisherConfig.Async): not the default,
	// so the floors are checked on cPubSub.
	cPubSubAsync = "redisbus Pub/Sub (Async)"
	cOrdered     = "redisbus Streams (ordered)"
	cConcurrent  = "redisbus Streams (MaxInFlight 64)"
	cPeer        = "watermill-redisstream v1.4.5"
	cGoChannel   = "Watermill GoChannel"
	cRawPublish  = "raw go-redis PUBLISH"
	cRawStreams  = "raw go-redis XADD/XREADGROUP"
	// The ceiling of the calling pattern workload 1 asks of the libraries.
	cRawCoalescedPublish = "raw go-redis PUBLISH, one per call, coalesced"
	cRawCoalescedXAdd    = "raw go-redis XADD, one per call, coalesced"
	cWSRoute             = "wsroute (WebSocket, cross-node)"
)

func pub(s sample) float64   { return s.pubRate }
func sub(s sample) float64   { return s.subRate }
func p50(s sample) float64   { return float64(s.p50) }
func p99(s sample) float64   { return float64(s.p99) }
func trips(s sample) float64 { return s.tripsPerMsg }

const floorPubSubP99 = "Pub/Sub p99 at 1k msg/s < 2 ms"

// floor is a performance target the report checks on the medians.
type floor struct {
	what     string
	measured string
	ok       bool
	missing  bool
}

func (r *report) ratio(workload string, size int, a, b string, measure func(sample) float64) (float64, bool) {
	x, ok1 := r.stat(workload, size, a, measure)
	y, ok2 := r.stat(workload, size, b, measure)
	if !ok1 || !ok2 || y.median == 0 {
		return 0, false
	}
	return x.median / y.median, true
}

func (r *report) floors() []floor {
	size := 64
	if !contains(r.o.sizes, 64) {
		size = r.o.sizes[0]
	}
	var floors []floor
	atLeast := func(what string, workload string, a, b string, measure func(sample) float64, min float64) {
		ratio, ok := r.ratio(workload, size, a, b, measure)
		floors = append(floors, floor{what: what, measured: fmt.Sprintf("%.2f×", ratio), ok: ok && ratio >= min, missing: !ok})
	}
	atLeast("Streams publish ≥ 5× watermill-redisstream", w1, cOrdered, cPeer, pub, 5)
	atLeast("Streams publish ≥ 0.6× raw pipelined XADD", w1, cOrdered, cRawStreams, pub, 0.6)
	atLeast("Streams subscribe via Router, concurrent ≥ 8× watermill-redisstream", w1, cConcurrent, cPeer, sub, 8)
	atLeast("Streams subscribe via Router, concurrent ≥ 0.6× GoChannel", w1, cConcurrent, cGoChannel, sub, 0.6)
	atLeast("Streams subscribe via Router, ordered ≥ 2× watermill-redisstream", w1, cOrdered, cPeer, sub, 2)
	atLeast("Pub/Sub publish ≥ 0.7× raw pipelined PUBLISH", w1, cPubSub, cRawPublish, pub, 0.7)
	atLeast("Pub/Sub subscribe via Router ≥ 0.6× GoChannel", w1, cPubSub, cGoChannel, sub, 0.6)

	lat := "latency at 1000 msg/s"
	atMost := func(what, a, b string, max float64) {
		ratio, ok := r.ratio(lat, 64, a, b, p50)
		floors = append(floors, floor{what: what, measured: fmt.Sprintf("%.2f×", ratio), ok: ok && ratio <= max, missing: !ok})
	}
	atMost("Pub/Sub p50 at 1k msg/s ≤ 1.5× raw PUBLISH→SUBSCRIBE", cPubSub, cRawPublish, 1.5)
	atMost("Streams p50 at 1k msg/s ≤ 1.5× raw XADD→XREADGROUP", cOrdered, cRawStreams, 1.5)
	if st, ok := r.stat(lat, 64, cPubSub, p99); ok {
		d := time.Duration(st.median)
		measured := d.Round(time.Microsecond).String()
		// The floor is absolute, so it measures the machine too: show what
		// Redis alone did in the same run.
		if raw, ok := r.stat(lat, 64, cRawPublish, p99); ok {
			measured += fmt.Sprintf(" (%s: %s)", cRawPublish, time.Duration(raw.median).Round(time.Microsecond))
		}
		floors = append(floors, floor{what: floorPubSubP99, measured: measured, ok: d < 2*time.Millisecond})
	} else {
		floors = append(floors, floor{what: floorPubSubP99, missing: true})
	}
	for _, c := range []string{cOrdered, cConcurrent} {
		st, ok := r.stat(w2, 64, c, trips)
		floors = append(floors, floor{
			what:     "Streams round trips per message at load ≤ 0.1 (" + c + ")",
			measured: fmt.Sprintf("%.3f", st.median), ok: ok && st.median <= 0.1, missing: !ok,
		})
	}
	return floors
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (r *report) markdown(chart string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Written by `go run ./bench %s` on %s (%s).\n\n", r.flags(), r.when.UTC().Format("2006-01-02 15:04 UTC"), r.elapsed.Round(time.Second))
	w("Machine: %s\n\n", r.machine)
	w("Every contender ran in every round, interleaved (each round starts with the next contender), after a warm-up; ")
	w("tables show the median of %d round(s) and, in brackets, the range. Absolute numbers on a shared machine vary 2–4× between runs; ", r.o.rounds)
	w("the ratios, measured within one run, are what to compare.\n\n")

	w("## Floors\n\n| Floor | Measured (medians) | |\n|---|---|---|\n")
	for _, f := range r.floors() {
		verdict := "met"
		switch {
		case f.missing:
			verdict, f.measured = "not measured", "–"
		case !f.ok:
			verdict = "**not met**"
		}
		w("| %s | %s | %s |\n", f.what, f.measured, verdict)
	}
	size := 64
	if !contains(r.o.sizes, 64) {
		size = r.o.sizes[0]
	}
	w("\nWorkload 1 asks for one message per `Publish` from 64 goroutines, each call waiting for Redis' reply; the raw pipelined contenders send batches of 100 from 8 goroutines without waiting per message. ")
	w("The simplest code that coalesces one-per-call publishes into pipelines as redisbus does (two pipelines in flight, one yield before sending so that woken callers join the batch; the \"one per call, coalesced\" raw contenders, no library in between) is the ceiling of that calling pattern here:\n\n")
	for _, pair := range [][3]string{
		{cOrdered, cRawCoalescedXAdd, cRawStreams},
		{cPubSub, cRawCoalescedPublish, cRawPublish},
	} {
		toCeiling, ok1 := r.ratio(w1, size, pair[0], pair[1], pub)
		ceiling, ok2 := r.ratio(w1, size, pair[1], pair[2], pub)
		if ok1 && ok2 {
			w("- %s publishes at %.2f× that ceiling; the ceiling itself is %.2f× %s.\n", pair[0], toCeiling, ceiling, pair[2])
		}
	}
	if async, ok := r.ratio(w1, size, cPubSubAsync, cRawPublish, pub); ok {
		w("- %s, whose `Publish` returns once the message is queued (`PublisherConfig.Async`, not the default; the time runs until `Flush` returns, so Redis has every message), publishes at %.2f× %s.\n", cPubSubAsync, async, cRawPublish)
	}
	var unmet []string
	p99Unmet := false
	for _, f := range r.floors() {
		if !f.ok && !f.missing {
			unmet = append(unmet, f.what)
			p99Unmet = p99Unmet || f.what == floorPubSubP99
		}
	}
	if len(unmet) > 0 {
		w("\n### Floors not met, and why\n\n")
		for _, what := range unmet {
			w("- %s\n", what)
		}
		w("\nThe publish floors compare a call that waits for its own reply with batches that do not. ")
		w("Each `Publish` above parks its goroutine until Redis answers, and wakes it after: two scheduler hand-offs per message, while the raw contenders hand Redis 100 commands at a time from 8 goroutines. ")
		w("On 2 cores shared with Redis, that per-call hand-off is the limit: even the simplest coalescing code reaches only the ceiling above, and redisbus adds envelopes, metadata, trimming and context handling on top. ")
		w("For Streams, Redis itself also works harder per entry (see Redis CPU µs/msg): a Watermill entry has three fields (UUID, metadata, payload, the layout watermill-redisstream reads) where the raw contender writes one, and the publishers' pipelines are smaller than its batches of 100. ")
		w("What closes the gap: publishing several messages per call (workload 3: `Publish(topic, msgs...)` runs near the raw rate), more cores for the client, or a publish that does not wait per message: `PublisherConfig.Async` for Pub/Sub (measured above), which gives up the error `Publish` would return; there is none for Streams, where `Publish` returning means stored, which is the point of Streams. ")
		w("Round trips per message at load count both sides: the publishers' shared pipelines (some 25 messages each, with 64 publishers and two pipelines in flight) and the subscriber's reads and acks.\n")
		if p99Unmet {
			w("\nThe p99 floor is an absolute time, so it measures the machine as much as the library: the floor table shows the p99 of raw go-redis PUBLISH→SUBSCRIBE, no library at all, in the same run. ")
			w("When that is itself near or above 2 ms, the virtual machine's scheduling jitter (steal time from other tenants) sets the tail, not redisbus; the p50 ratio to raw is the comparison that carries over.\n")
		}
	}
	if chart != "" {
		w("\n![Workload 1 at 64 B](%s)\n", strings.TrimPrefix(chart, "./"))
	}

	w("\n## Workload 1: publish, then consume through a Router\n\n")
	w("watermill-benchmark's procedure: %d messages published by 64 goroutines, one message per `Publish`; then a `message.Router` handler that only acks consumes them. ", r.o.n)
	w("Pub/Sub cannot keep messages for a subscriber that is not listening: redisbus Pub/Sub consumes from its inbox (subscribed first), raw PUBLISH is received while it is sent.\n")
	for _, size := range r.o.sizes {
		w("\n### %d-byte payloads\n\n", size)
		r.throughputTable(&b, w1, size, true)
	}
	w("\n## Workload 2: publish and consume at once\n\n%d messages, 64 B, 64 publishers while the Router consumes; the rate is messages over the time from the first publish to the last delivery.\n\n", r.o.n)
	r.throughputTable(&b, w2, 64, false)
	w("\n## Workload 3: batched publish\n\n`Publish(topic, 100 messages)` from 16 goroutines, 64 B (raw: pipelines of 100).\n\n")
	r.throughputTable(&b, w3, 64, true)

	w("\n## Workload 4: latency\n\nOpen loop at a fixed rate for %s, 64 B, the send time in the payload; publish-to-handler (raw: to the receiving loop; wsroute: `SendToClient` on one node to a WebSocket client of another).\n\n", r.o.duration)
	w("| Contender | Rate | p50 | p99 | p99.9 |\n|---|---|---|---|---|\n")
	for _, perSecond := range r.o.rates {
		workload := fmt.Sprintf("latency at %d msg/s", perSecond)
		for _, c := range r.contenders(workload) {
			a, _ := r.stat(workload, 64, c, p50)
			z, _ := r.stat(workload, 64, c, p99)
			y, _ := r.stat(workload, 64, c, func(s sample) float64 { return float64(s.p999) })
			w("| %s | %d/s | %s | %s | %s |\n", c, perSecond, dur(a.median), dur(z.median), dur(y.median))
		}
	}

	if len(r.contenders(w6)) > 0 {
		w("\n## Workload 6: consumers of one group share a backlog\n\n")
		w("%d messages wait in a stream before %d consumers of one group start, each its own subscriber and Router (default settings) with a handler that takes %s, as workers of a job queue run. ", r.o.sharedN, shareConsumers, shareWork)
		w("The ideal drain time keeps every consumer busy all along: %s. Medians of the drain time; the shares are from one run.\n\n", idealDrain(r.o.sharedN).Round(time.Millisecond))
		r.sharedBacklogTable(&b)
	}

	w("\n## How to run\n\n")
	w("`go run ./bench` from the repository root (a `go.work` includes `bench/`, a module of its own so that the peers never enter the library's `go.mod`). ")
	w("It uses `REDIS_URL`, or starts a private `redis-server` on a free port. Flags:\n\n")
	w("| Flag | Default | Meaning |\n|---|---|---|\n")
	w("| `-n` | 200000 | messages per throughput run |\n")
	w("| `-sizes` | 16,64,256 | payload sizes of workload 1 |\n")
	w("| `-rounds` | 3 | rounds; every contender runs once per round, interleaved |\n")
	w("| `-rates` | 1000,5000,10000 | rates of the latency workload |\n")
	w("| `-latency-duration` | 3s | how long each latency run sends |\n")
	w("| `-only` | | run only contenders whose name contains this |\n")
	w("| `-report` | BENCHMARKS.md | where to write this report (empty: stdout only) |\n")
	w("| `-chart` | bench/chart.svg | where to write the chart |\n")
	w("| `-cpuprofile` | | write a CPU profile of the whole run to this file (`go tool pprof`) |\n")
	w("| `-shared-n` | 1200 | messages of workload 6 (5 ms each, 3 consumers) |\n")
	w("| `-quick` | | 5000 messages (150 in workload 6), one round, 1000 msg/s for 1 s, no files: checks correctness (lost, duplicated, pending) and fails on it, never on speed; `.ci/run` runs it |\n")

	w("\n## Correctness\n\n")
	bad := 0
	for _, s := range r.samples {
		if f := s.failed(); f != "" {
			bad++
			w("- %s, %s, %d B: %s\n", s.contender, s.workload, s.size, f)
		}
	}
	if bad == 0 {
		w("Every run delivered every message exactly once, and left no entry pending in a consumer group.\n")
	}
	return b.String()
}

func dur(ns float64) string {
	return time.Duration(ns).Round(time.Microsecond).String()
}

func (r *report) flags() string {
	if r.o.quick {
		return "-quick"
	}
	return fmt.Sprintf("-n %d -rounds %d", r.o.n, r.o.rounds)
}

// throughputTable writes rates and costs; cost columns show workload 5:
// Redis commands and CPU per message (INFO deltas) and client round trips.
func (r *report) throughputTable(b *strings.Builder, workload string, size int, withPublish bool) {
	fmt.Fprintf(b, "| Contender | Publish msg/s | Consume msg/s | Redis cmds/msg | Redis CPU µs/msg | Round trips/msg | Busiest commands (per msg) |\n|---|---|---|---|---|---|---|\n")
	for _, c := range r.contenders(workload) {
		p, _ := r.stat(workload, size, c, pub)
		s, _ := r.stat(workload, size, c, sub)
		cmds, _ := r.stat(workload, size, c, func(s sample) float64 { return s.cmdsPerMsg })
		cpu, _ := r.stat(workload, size, c, func(s sample) float64 { return s.cpuPerMsg })
		t, _ := r.stat(workload, size, c, trips)
		pubText, subText := p.rate(), s.rate()
		if !withPublish || p.median == 0 {
			pubText = "–"
		}
		if s.median == 0 {
			subText = "–"
		}
		top := ""
		for _, smp := range r.samples {
			if smp.workload == workload && smp.size == size && smp.contender == c {
				top = smp.topCommands
			}
		}
		if strings.Contains(c, "GoChannel") {
			top = "(no Redis)"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.2f | %.1f | %.3f | %s |\n", c, pubText, subText, cmds.median, cpu.median, t.median, top)
	}
}

// chart draws workload 1's rates at 64 B as horizontal bars.
func (r *report) chart() string {
	size := 64
	if !contains(r.o.sizes, 64) {
		size = r.o.sizes[0]
	}
	type bar struct {
		label string
		pub   float64
		sub   float64
	}
	var bars []bar
	top := 0.0
	for _, c := range r.contenders(w1) {
		p, _ := r.stat(w1, size, c, pub)
		s, _ := r.stat(w1, size, c, sub)
		bars = append(bars, bar{c, p.median, s.median})
		top = max(top, p.median, s.median)
	}
	const left, width, rowHeight = 320, 460, 44
	height := 60 + rowHeight*len(bars)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+90, height)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">Workload 1, %d B: messages per second (median)</text>`+"\n", size)
	fmt.Fprintf(&b, `<rect x="%d" y="30" width="12" height="10" fill="#4a7bd0"/><text x="%d" y="39">publish</text>`, left, left+16)
	fmt.Fprintf(&b, `<rect x="%d" y="30" width="12" height="10" fill="#e08a2c"/><text x="%d" y="39">consume (Router; raw: receive loop)</text>`+"\n", left+80, left+96)
	for i, br := range bars {
		y := 50 + i*rowHeight
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+20, br.label)
		for j, v := range []float64{br.pub, br.sub} {
			w := 0.0
			if top > 0 {
				w = v / top * width
			}
			color := []string{"#4a7bd0", "#e08a2c"}[j]
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="16" fill="%s"/>`, left, y+j*18, w, color)
			fmt.Fprintf(&b, `<text x="%.0f" y="%d">%s</text>`+"\n", float64(left)+w+4, y+j*18+12, human(v))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// machine describes where the run happened.
func machine(ctx context.Context, e *env) string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	redisVersion := "?"
	if info, err := e.admin.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
				redisVersion = v
			}
		}
	}
	return fmt.Sprintf("%s, %d cores (GOMAXPROCS %d), %s, %s/%s; Redis %s at %s (same machine, loopback)",
		cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, redisVersion, e.opt.Addr)
}
