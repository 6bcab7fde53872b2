package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// syntheticReport is a report over made-up samples: every contender in
// every workload it runs, three rounds, with rates chosen so that the
// floors' verdicts are known.
func syntheticReport(publish map[string]float64) *report {
	o := options{n: 1000, sizes: []int{16, 64}, rounds: 3, rates: []int{1000}, duration: time.Second, sharedN: 150}
	var samples []sample
	for round := range 3 {
		spread := 0.9 + 0.1*float64(round) // 0.9, 1.0, 1.1: the median is the value given
		for _, c := range contenders() {
			rate := publish[c.name]
			if rate == 0 {
				rate = 100_000
			}
			for _, size := range o.sizes {
				samples = append(samples, sample{contender: c.name, workload: w1, size: size, pubRate: rate * spread, subRate: rate * spread, tripsPerMsg: 0.05})
			}
			if c.reference {
				continue
			}
			samples = append(samples,
				sample{contender: c.name, workload: w2, size: 64, subRate: rate * spread, tripsPerMsg: 0.05},
				sample{contender: c.name, workload: w3, size: 64, pubRate: rate * spread})
			if c.family != "inproc" {
				samples = append(samples, sample{contender: c.name, workload: "latency at 1000 msg/s", size: 64,
					p50: time.Duration(200*spread) * time.Microsecond, p99: time.Duration(1500*spread) * time.Microsecond})
			}
		}
		samples = append(samples, sample{contender: cWSRoute, workload: "latency at 1000 msg/s", size: 64, p50: 300 * time.Microsecond, p99: 3 * time.Millisecond})
	}
	m := machineInfo{cpu: "Test CPU", cores: 2, memory: "1 GiB", redisVersion: "7.0.0", redisAddr: "127.0.0.1:1", redisPrivate: true, persistence: "persistence off"}
	return newReport(o, samples, m, time.Minute, "Hand-written section, kept as it is.\n")
}

func TestReportFloorsAndExternalSection(t *testing.T) {
	r := syntheticReport(map[string]float64{
		cOrdered: 300_000, cPeer: 50_000, cPeerTuned: 60_000, // 6× the defaults, 5× tuned: met
		cPubSub: 100_000, cRawPublish: 400_000, // 0.25× raw: not met
	})
	md := r.markdown("bench/chart.svg")

	if !strings.Contains(md, "## Watermill's own benchmark tool\n\nHand-written section, kept as it is.") {
		t.Error("the -external section is not in the report as it was given")
	}
	for _, row := range []string{
		"| Streams publish ≥ 5× watermill-redisstream | watermill-redisstream on its defaults; workload 1, 64 B, publish; redisbus Streams (ordered) | 6.00× (tuned: 5.00×) | met |",
		"| Pub/Sub publish ≥ 0.7× raw pipelined PUBLISH | raw go-redis `PUBLISH`, pipelines of 100; workload 1, 64 B, publish | 0.25× | **not met** |",
	} {
		if !strings.Contains(md, row) {
			t.Errorf("floors table lacks %q", row)
		}
	}
	unmet := md[strings.Index(md, "### Floors not met, and why"):strings.Index(md, "## Workload 1")]
	if !strings.Contains(unmet, "**Pub/Sub publish ≥ 0.7× raw pipelined PUBLISH**: measured 0.25×.") {
		t.Error("an unmet floor is not explained")
	}
	if strings.Contains(unmet, "Streams publish ≥ 5× watermill-redisstream") {
		t.Error("a met floor is listed as not met")
	}
	for _, c := range contenders() {
		if !strings.Contains(md, fmt.Sprintf("| %s | %s | %s |", c.name, c.setup, c.why)) {
			t.Errorf("the contenders table lacks %s's configuration", c.name)
		}
	}
}

func TestChartShowsEveryWorkloadWithRanges(t *testing.T) {
	r := syntheticReport(nil)
	svg := r.chart()
	if err := wellFormed(svg); err != nil {
		t.Fatalf("chart is not well-formed XML: %v", err)
	}
	// Its own opaque background, so that it reads on a dark page.
	if !strings.Contains(svg, `rx="8" fill="#ffffff"`) {
		t.Error("chart has no background of its own")
	}
	for _, title := range []string{"W1: one per call, 16 B", "W1: one per call, 64 B", "W1: after publishing, 16 B", "W2: while publishing, 64 B", "W3: 100 per call, 64 B", "W4: p50 at 1000 msg/s", "W4: p99 at 1000 msg/s"} {
		if !strings.Contains(svg, ">"+title+"<") {
			t.Errorf("chart lacks the panel %q", title)
		}
	}
	for _, fill := range []string{colourRedisbus, colourPeer, "url(#raw)"} {
		if !strings.Contains(svg, `fill="`+fill+`"/>`) {
			t.Errorf("no bar is drawn in %s", fill)
		}
	}
	bars := strings.Count(svg, `height="10" fill=`) - 3 // less the legend's swatches
	whiskers := strings.Count(svg, `stroke-width="1.2"`)
	if bars == 0 || whiskers != bars {
		t.Errorf("%d bars and %d whiskers: every bar should show its range", bars, whiskers)
	}
}

// clusterSamples are three rounds of the cluster section on 1 and 3
// masters: on 3, each master does about a third of what the one did, and
// all of them together a little more.
func clusterSamples() []sample {
	var samples []sample
	for round := range 3 {
		spread := 0.9 + 0.1*float64(round) // the median is the value given
		for _, c := range clusterContenders {
			samples = append(samples,
				sample{contender: c, workload: clusterWorkload(1), size: 64, pubRate: 100_000 * spread, subRate: 80_000 * spread,
					cpuPerMsg: 4 * spread, masterCPU: []float64{4 * spread}, masterCmds: []float64{1}, masterTopics: []int{64}, tripsPerMsg: 0.05},
				sample{contender: c, workload: clusterWorkload(3), size: 64, pubRate: 90_000 * spread, subRate: 120_000 * spread,
					cpuPerMsg: 5 * spread, masterCPU: []float64{2 * spread, 1.5 * spread, 1.5 * spread}, masterCmds: []float64{0.4, 0.3, 0.3},
					masterTopics: []int{24, 20, 20}, tripsPerMsg: 0.1})
		}
	}
	return samples
}

func TestReportClusterSection(t *testing.T) {
	r := syntheticReport(nil)
	r.o.cluster, r.o.clusterTopics = []int{1, 3}, 64
	r.samples = append(r.samples, clusterSamples()...)
	md := r.markdown("")

	section := md[strings.Index(md, "## Redis Cluster: 1 and 3 masters"):strings.Index(md, "## Watermill's own benchmark tool")]
	for _, row := range []string{
		// 1 s over the busiest master's 4 µs is 250k msg/s.
		"| redisbus Streams, cluster | 1 | 100.0k (90.0k–110.0k) | 80.0k (72.0k–88.0k) | 4.00 | 4.00 | 1.00 | 250.0k | 100% | 64 | 0.050 |",
		// The busiest of three masters spends 2 µs, 40% of the 5 µs all spend.
		"| redisbus Pub/Sub (Sharded), cluster | 3 | 90.0k (81.0k–99.0k) | 120.0k (108.0k–132.0k) | 5.00 | 2.00 | 0.40 | 500.0k | 40% / 30% / 30% | 24 / 20 / 20 | 0.100 |",
	} {
		if !strings.Contains(section, row) {
			t.Errorf("the cluster table lacks %q", row)
		}
	}
	if !strings.Contains(section, "- redisbus Streams, cluster, 3 masters against 1: the busiest master's CPU per message 0.50×, its commands per message 0.40×, the Redis-bound ceiling 2.00×; the CPU of all masters together 1.25×; on this machine publish 0.90× and consume 1.50×.") {
		t.Errorf("the cluster section does not compare 3 masters with 1:\n%s", section)
	}
	if !strings.Contains(md, "- **Redis Cluster** (64 topics, 3 against 1 masters): Redis CPU per message on the busiest master, redisbus Streams 2.00 µs on 3 against 4.00 µs on 1;") {
		t.Error("the headlines lack the cluster's")
	}
}

func TestReportClusterSectionAbsentWhenNotRun(t *testing.T) {
	r := syntheticReport(nil)
	r.o.cluster = []int{1, 3}
	r.notes = []string{"The Redis Cluster section did not run: redis-server is not on PATH."}
	md := r.markdown("")
	if strings.Contains(md, "## Redis Cluster") || strings.Contains(md, "**Redis Cluster**") {
		t.Error("a cluster section without cluster samples")
	}
	if !strings.Contains(md, "- **Not run**: The Redis Cluster section did not run: redis-server is not on PATH.\n") {
		t.Error("the report does not say what did not run")
	}
}

func TestReportWaitReplicasSection(t *testing.T) {
	r := syntheticReport(map[string]float64{cOrdered: 200_000, cReplicaNoWait: 160_000, cWaitReplicas: 120_000})
	md := r.markdown("")
	section := md[strings.Index(md, "## WaitReplicas: what waiting for a replica costs"):strings.Index(md, "## Watermill's own benchmark tool")]
	for _, want := range []string{
		"| redisbus Streams (ordered) | 200.0k | 200.0k | 200.0k |",
		"| redisbus Streams, WaitReplicas: 1 | 120.0k | 120.0k | 120.0k |",
		"redisbus Streams, WaitReplicas: 1 publishes at 0.75× the same primary without waiting (workload 1), 0.75× with 100 messages per `Publish` (workload 3), 0.75× end to end (workload 2); 0.60× redisbus Streams (ordered) on the bench's Redis (workload 1).",
	} {
		if !strings.Contains(section, want) {
			t.Errorf("the WaitReplicas section lacks %q", want)
		}
	}
	if !strings.Contains(md, "- **WaitReplicas: 1** (workload 1, 64 B): Streams publish at 0.75× the same primary and replica without waiting;") {
		t.Error("the headlines lack WaitReplicas'")
	}
}

func TestSharesFollowTheMastersOrder(t *testing.T) {
	for _, c := range []struct {
		cpu  []float64
		want string
	}{
		{[]float64{1, 2, 1}, "25% / 50% / 25%"},
		{[]float64{3}, "100%"},
		{nil, "–"},
		{[]float64{0, 0}, "–"},
	} {
		if got := shares(sample{masterCPU: c.cpu}); got != c.want {
			t.Errorf("shares(%v) = %q, want %q", c.cpu, got, c.want)
		}
	}
	if busiest(sample{}) != 0 || ceiling(sample{}) != 0 {
		t.Error("a sample without per-master costs has a busiest master")
	}
}
