package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// report turns samples into BENCHMARKS.md and a chart.
type report struct {
	o       options
	samples []sample
	machine machineInfo
	elapsed time.Duration
	when    time.Time
	// external is the committed section on Watermill's own benchmark
	// tool (-external), placed into the report as it is.
	external string
	// notes say what did not run, and why.
	notes []string
}

func newReport(o options, samples []sample, machine machineInfo, elapsed time.Duration, external string) *report {
	return &report{o: o, samples: samples, machine: machine, elapsed: elapsed, when: time.Now(), external: external}
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
	// On a primary with a replica: without waiting, and waiting for it.
	cReplicaNoWait = "redisbus Streams, WaitReplicas: 0 (replica)"
	cWaitReplicas  = "redisbus Streams, WaitReplicas: 1"
	cPeer          = "watermill-redisstream v1.4.5"
	cPeerTuned     = "watermill-redisstream v1.4.5, tuned"
	cGoChannel     = "Watermill GoChannel"
	cRawPublish    = "raw go-redis PUBLISH"
	cRawStreams    = "raw go-redis XADD/XREADGROUP"
	// The ceiling of the calling pattern workload 1 asks of the libraries.
	cRawCoalescedPublish = "raw go-redis PUBLISH, one per call, coalesced"
	cRawCoalescedXAdd    = "raw go-redis XADD, one per call, coalesced"
	cWSRoute             = "wsroute (WebSocket, cross-node)"
	cWSRouteHistory      = "wsroute with history (wsroute.v1 client)"
)

// wReplay is wsroute's recovery workload.
const wReplay = "recovery of 1,000 missed messages"

func pub(s sample) float64   { return s.pubRate }
func sub(s sample) float64   { return s.subRate }
func p50(s sample) float64   { return float64(s.p50) }
func p99(s sample) float64   { return float64(s.p99) }
func trips(s sample) float64 { return s.tripsPerMsg }

const floorPubSubP99 = "Pub/Sub p99 at 1k msg/s < 2 ms"

// floor is a performance target the report checks on the medians.
type floor struct {
	what string
	// against is what the floor compares with, in which workload.
	against  string
	measured string
	ok       bool
	missing  bool
	// unmet says why the floor can be missed; the report shows it when it
	// is.
	unmet string
}

func (r *report) ratio(workload string, size int, a, b string, measure func(sample) float64) (float64, bool) {
	x, ok1 := r.stat(workload, size, a, measure)
	y, ok2 := r.stat(workload, size, b, measure)
	if !ok1 || !ok2 || y.median == 0 {
		return 0, false
	}
	return x.median / y.median, true
}

// size64 is the payload size the floors and headlines use: 64 B, or the
// first size run.
func (r *report) size64() int {
	if contains(r.o.sizes, 64) || len(r.o.sizes) == 0 {
		return 64
	}
	return r.o.sizes[0]
}

// Why floors are missed, by what they measure; the report shows the
// reasons of the floors a run missed.
const (
	unmetPerCall = "Each `Publish` here waits for its own reply; the raw contender sends batches of 100 that do not. " +
		"A waiting call parks its goroutine until Redis answers and wakes it after, two scheduler hand-offs per message, " +
		"and on cores shared with Redis that hand-off is the limit: the simplest code that coalesces such calls (the ceiling below) reaches well under the raw rate too, " +
		"and redisbus adds envelopes, metadata, trimming and context handling on top. " +
		"What closes the gap: several messages per call (workload 3: `Publish(topic, msgs...)`, compared with raw there), more cores for the client, " +
		"or, for Pub/Sub only, `PublisherConfig.Async`, which gives up the error `Publish` would return. Streams has no such mode: `Publish` returning means stored, which is the point of Streams."
	unmetStreamsEntry = " For Streams, Redis also works harder per entry (Redis CPU µs/msg): a Watermill entry has three fields (UUID, metadata, payload: the layout watermill-redisstream reads) where the raw contender writes one."
	unmetPeerPublish  = "Both libraries wait for Redis on every call. watermill-redisstream sends one `XADD` per call; redisbus coalesces concurrent calls into pipelines, " +
		"but is bound by the per-call hand-off that also bounds the simplest coalescing code (the ceiling below)."
	unmetLatency = "The Router path has hand-offs the raw loop, which reads and records in one goroutine, does not: " +
		"the subscriber's delivery goroutine, and a goroutine the Router starts per message. Every Watermill subscriber pays them (see watermill-redisstream's p50 in workload 4)."
	unmetP99 = "The p99 floor is an absolute time, so it measures the machine as much as the library: the Measured column shows the p99 of raw go-redis PUBLISH→SUBSCRIBE, no library at all, in the same run. " +
		"A tail is where a busy or virtualised machine shows: every hand-off between goroutines is a chance to wait for a core (see the load average above), and the Router path has more hand-offs than the raw loop; " +
		"steal time from other tenants of the virtual machine adds to it. The p50 ratio to raw is the comparison that carries over from one machine to another."
	unmetTrips       = "Round trips at load count both sides: the publishers' shared pipelines (some 25 messages each with 64 publishers and two pipelines in flight) and the subscriber's reads and acks. Fewer publishers waiting at once make smaller pipelines."
	unmetPeerConsume = "watermill-redisstream makes three round trips per message (`XADD`, `XREADGROUP COUNT 1`, `XACK`), one at a time per consumer, where redisbus makes a small fraction of one (round trips/msg in workload 1). " +
		"On loopback a round trip costs little, so how far ahead redisbus is depends on the machine: the gap widens with any network between the application and Redis, where every round trip also costs a network latency."
	unmetGoChannel = "GoChannel has no network and no broker; on cores shared with Redis, the Router's per-message work and the scheduler bound the Redis contenders more than the in-process one."
)

func (r *report) floors() []floor {
	size := r.size64()
	var floors []floor
	atLeast := func(what, against string, workload string, a, b string, measure func(sample) float64, min float64, unmet string) {
		ratio, ok := r.ratio(workload, size, a, b, measure)
		measured := fmt.Sprintf("%.2f×", ratio)
		if b == cPeer {
			// The floors are set against the peer's defaults; show the
			// tuned one too, so that nobody has to wonder.
			if tuned, ok := r.ratio(workload, size, a, cPeerTuned, measure); ok {
				measured += fmt.Sprintf(" (tuned: %.2f×)", tuned)
			}
		}
		floors = append(floors, floor{what: what, against: against, measured: measured, ok: ok && ratio >= min, missing: !ok, unmet: unmet})
	}
	w1At := fmt.Sprintf("workload 1, %d B", size)
	atLeast("Streams publish ≥ 5× watermill-redisstream", "watermill-redisstream on its defaults; "+w1At+", publish; redisbus Streams (ordered)",
		w1, cOrdered, cPeer, pub, 5, unmetPeerPublish)
	atLeast("Streams publish ≥ 0.6× raw pipelined XADD", "raw go-redis `XADD`, pipelines of 100; "+w1At+", publish; redisbus Streams (ordered)",
		w1, cOrdered, cRawStreams, pub, 0.6, unmetPerCall+unmetStreamsEntry)
	atLeast("Streams subscribe via Router, concurrent ≥ 8× watermill-redisstream", "watermill-redisstream on its defaults; "+w1At+", consume; redisbus Streams (MaxInFlight 64)",
		w1, cConcurrent, cPeer, sub, 8, unmetPeerConsume)
	atLeast("Streams subscribe via Router, concurrent ≥ 0.6× GoChannel", "Watermill GoChannel (in-process) through the same Router; "+w1At+", consume",
		w1, cConcurrent, cGoChannel, sub, 0.6, unmetGoChannel)
	atLeast("Streams subscribe via Router, ordered ≥ 2× watermill-redisstream", "watermill-redisstream on its defaults; "+w1At+", consume; redisbus Streams (ordered)",
		w1, cOrdered, cPeer, sub, 2, unmetPeerConsume)
	atLeast("Pub/Sub publish ≥ 0.7× raw pipelined PUBLISH", "raw go-redis `PUBLISH`, pipelines of 100; "+w1At+", publish",
		w1, cPubSub, cRawPublish, pub, 0.7, unmetPerCall)
	atLeast("Pub/Sub subscribe via Router ≥ 0.6× GoChannel", "Watermill GoChannel (in-process) through the same Router; "+w1At+", consume",
		w1, cPubSub, cGoChannel, sub, 0.6, unmetGoChannel)

	lat := "latency at 1000 msg/s"
	atMost := func(what, against, a, b string, max float64) {
		ratio, ok := r.ratio(lat, 64, a, b, p50)
		floors = append(floors, floor{what: what, against: against, measured: fmt.Sprintf("%.2f×", ratio), ok: ok && ratio <= max, missing: !ok, unmet: unmetLatency})
	}
	atMost("Pub/Sub p50 at 1k msg/s ≤ 1.5× raw PUBLISH→SUBSCRIBE", "raw go-redis `PUBLISH` to a `SUBSCRIBE` loop, same rate, same run (workload 4)", cPubSub, cRawPublish, 1.5)
	atMost("Streams p50 at 1k msg/s ≤ 1.5× raw XADD→XREADGROUP", "raw go-redis `XADD` to an `XREADGROUP` loop, same rate, same run (workload 4)", cOrdered, cRawStreams, 1.5)
	p99Floor := floor{what: floorPubSubP99, against: "an absolute time (workload 4)", missing: true, unmet: unmetP99}
	if st, ok := r.stat(lat, 64, cPubSub, p99); ok {
		d := time.Duration(st.median)
		p99Floor.measured = d.Round(time.Microsecond).String()
		// The floor is absolute, so it measures the machine too: show what
		// Redis alone did in the same run.
		if raw, ok := r.stat(lat, 64, cRawPublish, p99); ok {
			p99Floor.measured += fmt.Sprintf(" (raw go-redis: %s)", time.Duration(raw.median).Round(time.Microsecond))
		}
		p99Floor.ok, p99Floor.missing = d < 2*time.Millisecond, false
	}
	floors = append(floors, p99Floor)
	for _, c := range []string{cOrdered, cConcurrent} {
		st, ok := r.stat(w2, 64, c, trips)
		floors = append(floors, floor{
			what:     "Streams round trips per message at load ≤ 0.1 (" + c + ")",
			against:  "an absolute count: the client round trips of publishers and subscriber (workload 2)",
			measured: fmt.Sprintf("%.3f", st.median), ok: ok && st.median <= 0.1, missing: !ok, unmet: unmetTrips,
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

// headlines are the comparisons an outsider asks about first, from this
// run's medians.
func (r *report) headlines() []string {
	size := r.size64()
	var lines []string
	both := func(workload string, a string, measure func(sample) float64) (string, bool) {
		def, ok1 := r.ratio(workload, size, a, cPeer, measure)
		tuned, ok2 := r.ratio(workload, size, a, cPeerTuned, measure)
		switch {
		case ok1 && ok2:
			return fmt.Sprintf("%.1f× watermill-redisstream on its defaults and %.1f× watermill-redisstream tuned", def, tuned), true
		case ok1:
			return fmt.Sprintf("%.1f× watermill-redisstream on its defaults", def), true
		}
		return "", false
	}
	if text, ok := both(w1, cOrdered, pub); ok {
		lines = append(lines, fmt.Sprintf("**Streams publish** (workload 1, %d B, one message per `Publish` from 64 goroutines): redisbus publishes at %s.", size, text))
	}
	if text, ok := both(w1, cOrdered, sub); ok {
		line := fmt.Sprintf("**Streams consume** through a Router (workload 1, %d B): redisbus in order at %s", size, text)
		if c, ok := r.ratio(w1, size, cConcurrent, cPeer, sub); ok {
			line += fmt.Sprintf("; with `MaxInFlight` 64 at %.1f× the defaults", c)
		}
		lines = append(lines, line+".")
	}
	if text, ok := both(w2, cOrdered, sub); ok {
		lines = append(lines, fmt.Sprintf("**Streams, publishing and consuming at once** (workload 2, end to end): redisbus at %s.", text))
	}
	if p, ok := r.ratio(w1, size, cPubSub, cRawPublish, pub); ok {
		line := fmt.Sprintf("**Pub/Sub publish**, against raw go-redis `PUBLISH` in pipelines of 100 (no library, no waiting per message): %.2f× with one waiting `Publish` per message", p)
		if b, ok := r.ratio(w3, 64, cPubSub, cRawPublish, pub); ok {
			line += fmt.Sprintf(", %.2f× with 100 messages per `Publish`", b)
		}
		lines = append(lines, line+".")
	}
	if s, ok := r.ratio(w2, 64, cPubSub, cGoChannel, sub); ok {
		lines = append(lines, fmt.Sprintf("**Pub/Sub end to end** (workload 2): %.1f× Watermill's in-process GoChannel (why it can be faster: below).", s))
	}
	if a, ok := r.stat("latency at 1000 msg/s", 64, cPubSub, p50); ok {
		line := fmt.Sprintf("**Latency** at 1,000 msg/s, publish to handler: Pub/Sub p50 %s", dur(a.median))
		if b, ok := r.stat("latency at 1000 msg/s", 64, cOrdered, p50); ok {
			line += fmt.Sprintf(", Streams p50 %s", dur(b.median))
		}
		if c, ok := r.stat("latency at 1000 msg/s", 64, cRawPublish, p50); ok {
			line += fmt.Sprintf(" (raw go-redis `PUBLISH`: %s)", dur(c.median))
		}
		lines = append(lines, line+".")
	}
	return lines
}

func (r *report) markdown(chart string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("redisbus measured against watermill-redisstream (on its defaults, and tuned), Watermill's in-process GoChannel and raw go-redis with no library, ")
	w("all in one run against one Redis; what waiting for a replica costs (`WaitReplicas`), and how the work spreads over the masters of a Redis Cluster; then [Watermill's own benchmark tool](#watermills-own-benchmark-tool), with redisbus added to it, beside the results it publishes.\n\n")
	w("Written by `go run ./bench %s` on %s (%s).", r.flags(), r.when.UTC().Format("2006-01-02 15:04 UTC"), r.elapsed.Round(time.Second))
	if r.o.n < 200_000 {
		w(" **A shorter run than the default** (%d messages per throughput run): the numbers are noisier than a full run's.", r.o.n)
	}
	w("\n\n")
	for _, line := range append(r.headlines(), r.scaleHeadlines()...) {
		w("- %s\n", line)
	}
	if chart != "" {
		w("\n![Throughput and latency of every contender, per workload: medians with min–max ranges](%s)\n", strings.TrimPrefix(chart, "./"))
	}

	w("\n## Where the numbers come from\n\n")
	w("%s", r.machine.markdown())
	w("- **Method**: every contender runs in every round, interleaved (each round starts with the next contender), after a warm-up; ")
	w("the tables show the median of %d round(s) and, in brackets, the lowest and highest. ", r.o.rounds)
	w("A rate is messages over the wall-clock time of that phase. Redis' commands and CPU per message are the differences of `INFO commandstats` and `INFO cpu` around each run; ")
	w("round trips are counted by a go-redis hook on every client a contender uses (a command or a pipeline counts one).\n")
	w("- **Checks**: every payload carries a sequence number, and every run counts messages lost, duplicated or left pending in the consumer group (see [Correctness](#correctness)); the bench fails on redisbus' failures, never on speed.\n")
	w("- **The floors** below are this project's own performance targets: ratios to the alternatives measured in the same run, and a few absolute bounds.\n")
	w("- **A second opinion**: [Watermill's own benchmark tool](#watermills-own-benchmark-tool), which nobody here wrote, run on the same machine.\n")
	for _, note := range r.notes {
		w("- **Not run**: %s\n", note)
	}

	w("\n## Contenders\n\n| Contender | Configuration | Why |\n|---|---|---|\n")
	for _, c := range contenders() {
		if len(r.contenders(w1)) > 0 && !slices.Contains(r.contenders(w1), c.name) {
			continue // not in this run (-only)
		}
		w("| %s | %s | %s |\n", c.name, c.setup, c.why)
	}
	if r.ran(cWSRoute) {
		w("| %s | Two `wsroute` nodes on one Redis; `SendToClient` on one node to a WebSocket client connected to the other. | The cross-node WebSocket path as an application uses it; latency only. |\n", cWSRoute)
	}

	w("\n## How to read this\n\n")
	w("- Rates are messages per second: higher is better. Latencies: lower is better.\n")
	w("- Pub/Sub and Streams do different jobs. Pub/Sub is best-effort: a message reaches the subscribers listening at that moment, and nothing is stored. Streams stores every message and delivers it at least once to each consumer group, with acks. Compare like with like: redisbus Streams with watermill-redisstream and raw `XADD`; redisbus Pub/Sub with raw `PUBLISH` and GoChannel.\n")
	w("- Compare ratios within one run, not absolute numbers across runs: on a shared virtual machine the same contender varies 2–4× between runs, and all contenders of a run see the same machine.\n")
	w("- *Publish* is the time 64 goroutines take to publish every message, one per call, each call waiting until the publisher reports it sent; *consume* is the time a `message.Router` takes to hand all of them to a handler that only acks.\n")
	w("- The raw go-redis rows are not libraries: they are the ceiling of this Redis on this machine, what a library's overhead is measured from.\n")
	w("- *Redis cmds/msg*, *Redis CPU µs/msg* and *round trips/msg* are what each message costs the server and the network (workload 5 is these columns of workloads 1 to 3); on loopback a round trip is cheap, across a network it is the cost that counts.\n")

	w("\n## Why redisbus Pub/Sub can consume faster than GoChannel\n\n")
	w("Both feed the same Router and handler, so the difference is how each hands a message over. ")
	w("GoChannel (persistent) delivers every message from a goroutine of its own: when the Router subscribes, it starts one goroutine per stored message (%d in workload 1), and `Publish` starts one per message and subscriber (workload 2). ", r.o.n)
	w("Each goroutine copies the message (new ack and nack channels, a copy of the metadata) and makes a cancellable context, then queues on one mutex of the subscriber to pass the message over an unbuffered channel, and waits for the ack. ")
	w("In a CPU profile of GoChannel's runs (`go run ./bench -only GoChannel -cpuprofile cpu.out`), that hand-off (`sendMessageToSubscriber`) took about a third of the CPU, and allocation and garbage collection much of the rest. ")
	w("redisbus Pub/Sub delivers from one goroutine per topic that walks a queue: one channel send per message and, under a Router (one message in flight), one select that waits for the ack; no goroutine, lock or copy per message, and a light context of its own that, unlike `context.WithCancel`, does not register with its parent.\n\n")
	w("In workload 1 redisbus Pub/Sub's consume rate also leaves out receiving and decoding the messages, which happened while they were published (the subscriber was listening; Pub/Sub keeps nothing for later). ")
	if s, ok := r.ratio(w2, 64, cPubSub, cGoChannel, sub); ok {
		w("Workload 2 times everything, from the first publish to the last delivery: there redisbus Pub/Sub runs at %.1f× GoChannel.\n", s)
	} else {
		w("Workload 2 times everything, from the first publish to the last delivery.\n")
	}

	w("\n## Floors\n\n| Floor | Compared with | Measured (medians) | |\n|---|---|---|---|\n")
	floors := r.floors()
	for _, f := range floors {
		verdict := "met"
		switch {
		case f.missing:
			verdict, f.measured = "not measured", "–"
		case !f.ok:
			verdict = "**not met**"
		}
		w("| %s | %s | %s | %s |\n", f.what, f.against, f.measured, verdict)
	}
	w("\nWhy these comparisons: watermill-redisstream is the Redis Streams library Watermill users have today, doing the same job (consumer group, Router, an ack per message), so a new one must be clearly faster to be worth a switch; the floors are set against its defaults, and the tuned ratio is shown beside. ")
	w("Raw go-redis is what this Redis and this machine do with no library at all, so the ratio to it is what the library itself costs. ")
	w("GoChannel is Watermill's in-process Pub/Sub, with no network and no broker: a Router fed by anything over Redis is not expected to match it, only to come within reach. ")
	w("The absolute floors are what interactive use (WebSocket fan-out) and a real network need: a tail under 2 ms, and few round trips per message, since each costs a network latency once Redis is on another host.\n\n")

	size := r.size64()
	w("Workload 1 asks for one message per `Publish` from 64 goroutines, each call waiting for its reply; the raw pipelined contenders send batches of 100 from 8 goroutines without waiting per message. ")
	w("The simplest code that coalesces one-per-call publishes into pipelines as redisbus does (the \"one per call, coalesced\" raw contenders, no library in between) is the ceiling of that calling pattern here:\n\n")
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
		w("- %s, whose `Publish` returns once the message is queued, publishes at %.2f× %s.\n", cPubSubAsync, async, cRawPublish)
	}
	var unmet []floor
	for _, f := range floors {
		if !f.ok && !f.missing {
			unmet = append(unmet, f)
		}
	}
	if len(unmet) > 0 {
		w("\n### Floors not met, and why\n\n")
		said := map[string]bool{}
		for _, f := range unmet {
			if said[f.unmet] {
				w("- **%s**: measured %s. As above.\n", f.what, f.measured)
				continue
			}
			said[f.unmet] = true
			w("- **%s**: measured %s. %s\n", f.what, f.measured, f.unmet)
		}
	}

	w("\n## Workload 1: publish, then consume through a Router\n\n")
	w("watermill-benchmark's procedure: %d messages published by 64 goroutines, one message per `Publish`; then a `message.Router` handler that only acks consumes them. ", r.o.n)
	w("Pub/Sub cannot keep messages for a subscriber that is not listening: redisbus Pub/Sub consumes from its inbox (subscribed first, so receiving and decoding happen during the publish phase), raw PUBLISH is received while it is sent.\n")
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

	r.wsrouteHistorySection(&b)
	r.delayedSection(&b)
	r.cacheSection(&b)

	if len(r.contenders(w6)) > 0 {
		w("\n## Workload 6: consumers of one group share a backlog\n\n")
		w("%d messages wait in a stream before %d consumers of one group start, each its own subscriber and Router (default settings) with a handler that takes %s, as workers of a job queue run. ", r.o.sharedN, shareConsumers, shareWork)
		w("The ideal drain time keeps every consumer busy all along: %s. Medians of the drain time; the shares are from one run.\n\n", idealDrain(r.o.sharedN).Round(time.Millisecond))
		r.sharedBacklogTable(&b)
	}

	r.waitReplicasSection(&b)
	r.clusterSection(&b)

	w("\n## Watermill's own benchmark tool\n\n")
	w("%s", strings.TrimSpace(r.external))
	w("\n\n## How to run\n\n")
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
	w("| `-external` | bench/watermill-benchmark.md | the committed section on Watermill's own benchmark tool, placed into the report as it is |\n")
	w("| `-cpuprofile` | | write a CPU profile of the whole run to this file (`go tool pprof`) |\n")
	w("| `-shared-n` | 1200 | messages of workload 6 (5 ms each, 3 consumers) |\n")
	w("| `-cluster` | 1,3 | master counts of the Redis Cluster section, each a private cluster (empty: skip the section) |\n")
	w("| `-cluster-topics` | 64 | topics the cluster section spreads over the masters |\n")
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
	} else {
		w("\nA peer's failures are reported here and do not fail the run; redisbus' would.\n")
	}
	return b.String()
}

// ran reports whether contender has a sample in this run.
func (r *report) ran(contender string) bool {
	for _, s := range r.samples {
		if s.contender == contender {
			return true
		}
	}
	return false
}

func dur(ns float64) string {
	return time.Duration(ns).Round(time.Microsecond).String()
}

func (r *report) flags() string {
	if r.o.quick {
		return "-quick"
	}
	flags := fmt.Sprintf("-n %d -rounds %d", r.o.n, r.o.rounds)
	if cluster := joinInts(r.o.cluster, ","); cluster != "1,3" {
		flags += fmt.Sprintf(" -cluster %q", cluster)
	}
	return flags
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

// wsrouteHistorySection compares wsroute with and without history in the
// latency workload, and reports the replay of a reconnecting client.
func (r *report) wsrouteHistorySection(b *strings.Builder) {
	if !r.ran(cWSRouteHistory) || len(r.o.rates) == 0 {
		return
	}
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	workload := fmt.Sprintf("latency at %d msg/s", r.o.rates[0])
	w("\n## wsroute: what recovery costs\n\n")
	w("The latency workload at %d msg/s with `Config.History` keeping every message to bob (`Size` 1,000) and bob a `wsroute.v1` client reading JSON envelopes, against the same without history; then bob, %d messages behind, reconnecting %d times presenting his position (dial to the end of the replay, every message read and checked).\n\n", r.o.rates[0], replayedMessages, replayRounds)
	w("| | Redis CPU per message | Redis commands per message | p50 | p99 |\n|---|---|---|---|---|\n")
	for _, c := range []string{cWSRoute, cWSRouteHistory} {
		cpu, _ := r.stat(workload, 64, c, func(s sample) float64 { return s.cpuPerMsg })
		cmds, _ := r.stat(workload, 64, c, func(s sample) float64 { return s.cmdsPerMsg })
		a, _ := r.stat(workload, 64, c, p50)
		z, _ := r.stat(workload, 64, c, p99)
		w("| %s | %.1f µs | %.1f | %s | %s |\n", c, cpu.median, cmds.median, dur(a.median), dur(z.median))
	}
	if ratio, ok := r.ratio(workload, 64, cWSRouteHistory, cWSRoute, func(s sample) float64 { return s.cpuPerMsg }); ok {
		w("\nHistory costs Redis %.2f× the CPU per message.", ratio)
	}
	a, okA := r.stat(wReplay, 64, cWSRouteHistory, p50)
	z, _ := r.stat(wReplay, 64, cWSRouteHistory, p99)
	if okA {
		w(" A client %d messages behind is back, everything replayed, in %s (p50; p99 %s).\n", replayedMessages, dur(a.median), dur(z.median))
	}
}
