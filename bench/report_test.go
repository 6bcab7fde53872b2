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
