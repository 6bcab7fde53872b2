package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/redisurl"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

type options struct {
	n        int
	sizes    []int
	rounds   int
	rates    []int
	duration time.Duration
	only     string
	quick    bool
	report   string
	chart    string
	external string
	profile  string
	sharedN  int
	// cluster lists the master counts of the cluster section (none: it
	// does not run); clusterTopics is how many topics it spreads over them.
	cluster       []int
	clusterTopics int
}

func main() {
	var o options
	var sizes, rates, cluster string
	flag.IntVar(&o.n, "n", 200_000, "messages per throughput run")
	flag.StringVar(&sizes, "sizes", "16,64,256", "payload sizes in bytes for workload 1")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; contenders run interleaved within each")
	flag.StringVar(&rates, "rates", "1000,5000,10000", "message rates of the latency workload")
	flag.DurationVar(&o.duration, "latency-duration", 3*time.Second, "how long each latency run sends")
	flag.StringVar(&o.only, "only", "", "run only contenders whose name contains this")
	flag.BoolVar(&o.quick, "quick", false, "a small run that checks correctness only (as CI runs it)")
	flag.StringVar(&o.report, "report", "BENCHMARKS.md", "where to write the report (empty: stdout only)")
	flag.StringVar(&o.chart, "chart", "bench/chart.svg", "where to write the chart (empty: none)")
	flag.StringVar(&o.external, "external", "bench/watermill-benchmark.md", "the committed section on Watermill's own benchmark tool, placed into the report")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.IntVar(&o.sharedN, "shared-n", 1200, "messages of the shared-backlog workload (5 ms each, 3 consumers)")
	flag.StringVar(&cluster, "cluster", "1,3", "master counts of the Redis Cluster section (empty: skip it)")
	flag.IntVar(&o.clusterTopics, "cluster-topics", 64, "topics the cluster section spreads over the masters")
	flag.Parse()
	o.sizes, o.rates, o.cluster = ints(sizes), ints(rates), ints(cluster)
	if o.quick {
		o.n, o.sizes, o.rounds, o.rates, o.duration, o.sharedN = 5000, []int{64}, 1, []int{1000}, time.Second, 150
		o.report, o.chart = "", ""
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -cpuprofile:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile() // os.Exit skips the deferred stop
		os.Exit(1)
	}
}

func ints(list string) []int {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func run(ctx context.Context, o options) error {
	url := os.Getenv("REDIS_URL")
	private := url == ""
	if private {
		// A private redis-server, as the tests start one.
		var err error
		if url, err = pubsubtest.SharedURL(); err != nil {
			return err
		}
		defer pubsubtest.StopShared()
	}
	opt, err := redisurl.Parse(url)
	if err != nil {
		return err
	}
	e := &env{opt: opt, admin: redis.NewClient(opt), trips: &roundTrips{}, private: private}
	defer e.admin.Close()
	if err := e.admin.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", opt.Addr, err)
	}

	// The section on Watermill's own benchmark tool is written by hand
	// (its runs are not this program's), so a run keeps it as it is. It is
	// read when the report is written, and checked for now so that a long
	// run does not end in a missing file.
	if o.external != "" && o.report != "" {
		if _, err := os.Stat(o.external); err != nil {
			return fmt.Errorf("-external: %w", err)
		}
	}

	started, loadStart := time.Now(), loadAverage()
	var samples []sample
	record := func(s sample, err error) {
		if err != nil {
			s.lost = max(s.lost, 1) // a run that failed counts as losing
			fmt.Fprintf(os.Stderr, "%s / %s: %v\n", s.contender, s.workload, err)
		}
		samples = append(samples, s)
		fmt.Println(line(s))
	}

	var notes []string
	var all []*contender
	replicated := false
	for _, c := range contenders() {
		if selected(c.name, o.only) {
			all = append(all, c)
			replicated = replicated || c.replicated
		}
	}
	var replicatedAt string
	if replicated {
		r, stop, where, err := replicatedEnv(ctx, e)
		if err != nil {
			// Without a replica WaitReplicas has nothing to wait for: the
			// contenders that need one do not run, and the report says why.
			all = slices.DeleteFunc(all, func(c *contender) bool { return c.replicated })
			notes = append(notes, fmt.Sprintf("%s and %s did not run: no primary with a replica (%v).", cReplicaNoWait, cWaitReplicas, err))
		} else {
			defer stop()
			e.replicated, replicatedAt = r, where
		}
	}
	clusters, clusterNote := startClusters(ctx, o)
	defer func() {
		for _, bc := range clusters {
			bc.close()
		}
	}()
	if clusterNote != "" {
		notes = append(notes, clusterNote)
	}

	fmt.Println("warm-up")
	for _, c := range all {
		if _, err := publishThenConsume(ctx, e, c, min(o.n, 2000), 64); err != nil {
			return fmt.Errorf("warm-up of %s: %w", c.name, err)
		}
	}
	for _, bc := range clusters {
		var warmErr error
		clusterRun(ctx, bc, e.trips, o.only, min(o.n, 2000), o.clusterTopics, func(s sample, err error) {
			if err != nil && warmErr == nil {
				warmErr = fmt.Errorf("warm-up of %s on a %s: %w", s.contender, s.workload, err)
			}
		})
		if warmErr != nil {
			return warmErr
		}
	}
	for round := range o.rounds {
		// Interleave: every contender once per round, starting elsewhere
		// each round, so drift in the machine spreads over all of them.
		var order []*contender
		if len(all) > 0 {
			order = append(all[round%len(all):], all[:round%len(all)]...)
		}
		fmt.Printf("round %d of %d\n", round+1, o.rounds)
		for _, size := range o.sizes {
			for _, c := range order {
				record(publishThenConsume(ctx, e, c, o.n, size))
			}
		}
		for _, c := range order {
			if !c.reference {
				record(concurrent(ctx, e, c, o.n, 64))
			}
		}
		for _, c := range order {
			if !c.reference {
				record(batched(ctx, e, c, o.n, 64))
			}
		}
		for _, c := range order {
			if c.shares {
				record(sharedBacklog(ctx, e, c, o.sharedN))
			}
		}
		for _, perSecond := range o.rates {
			for _, c := range order {
				if c.family == "inproc" || c.reference {
					continue
				}
				record(latency(ctx, e, c, perSecond, o.duration, 64))
			}
			if selected(cWSRoute, o.only) {
				record(wsrouteLatency(ctx, e, perSecond, o.duration, 64, false))
			}
			if selected(cWSRouteHistory, o.only) {
				record(wsrouteLatency(ctx, e, perSecond, o.duration, 64, true))
			}
		}
		if selected(cWSRouteHistory, o.only) {
			record(wsrouteReplay(ctx, e))
		}
		if selected(cDelayed, o.only) {
			record(delayed(ctx, e, min(o.n, delayedMax), true))
			record(delayed(ctx, e, min(o.n, delayedMax), false))
		}
		runCaches(ctx, e, o, record)
		// The clusters take turns first, as the contenders do.
		for i := range clusters {
			bc := clusters[(i+round)%len(clusters)]
			clusterRun(ctx, bc, e.trips, o.only, o.n, o.clusterTopics, record)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}

	failures := 0
	for _, s := range samples {
		if s.failed() != "" {
			fmt.Fprintf(os.Stderr, "correctness: %s / %s / %d B: %s\n", s.contender, s.workload, s.size, s.failed())
			if !s.peer {
				failures++
			}
		}
	}
	external := "(not included: no -external file given)"
	if o.external != "" {
		data, err := os.ReadFile(o.external)
		if err != nil && o.report != "" {
			return fmt.Errorf("-external: %w", err)
		}
		external = string(data)
	}
	machine := readMachine(ctx, e, loadStart)
	machine.replicated = replicatedAt
	r := newReport(o, samples, machine, time.Since(started), external)
	r.notes = notes
	fmt.Println(r.markdown(o.chart))
	if o.report != "" {
		if err := os.WriteFile(o.report, []byte(r.markdown(o.chart)), 0o644); err != nil {
			return err
		}
	}
	// The chart is drawn on every run, -quick too, so that CI's smoke test
	// catches a chart that would not render.
	chart := r.chart()
	if err := wellFormed(chart); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if o.chart != "" {
		if err := os.WriteFile(o.chart, []byte(chart), 0o644); err != nil {
			return err
		}
	}
	if failures > 0 {
		return fmt.Errorf("%d runs lost, duplicated or left messages pending", failures)
	}
	return nil
}

// startClusters starts the private clusters of the cluster section, or
// says why it does not run.
func startClusters(ctx context.Context, o options) ([]*benchCluster, string) {
	if len(o.cluster) == 0 || !slices.ContainsFunc(clusterContenders, func(name string) bool { return selected(name, o.only) }) {
		return nil, ""
	}
	var clusters []*benchCluster
	for _, masters := range o.cluster {
		bc, err := startBenchCluster(ctx, masters)
		if err != nil {
			for _, bc := range clusters {
				bc.close()
			}
			return nil, fmt.Sprintf("The Redis Cluster section did not run: %v.", err)
		}
		clusters = append(clusters, bc)
	}
	return clusters, ""
}

func line(s sample) string {
	switch {
	case s.family == "cache" && s.p50 == 0:
		return fmt.Sprintf("  %-36s %-28s reads %8.0f/s %s", s.contender, s.workload, s.subRate, s.failed())
	case s.p50 > 0:
		return fmt.Sprintf("  %-36s %-28s p50 %v p99 %v p999 %v %s", s.contender, s.workload, s.p50, s.p99, s.p999, s.failed())
	case len(s.masterTopics) > 0:
		return fmt.Sprintf("  %-36s %-28s pub %8.0f/s sub %8.0f/s CPU µs/msg %.2f (per master %s) cmds/msg %.2f trips/msg %.3f topics %v %s",
			s.contender, s.workload, s.pubRate, s.subRate, s.cpuPerMsg, floats(s.masterCPU), s.cmdsPerMsg, s.tripsPerMsg, s.masterTopics, s.failed())
	case s.drain > 0:
		return fmt.Sprintf("  %-36s %-28s drained in %v (ideal %v), per consumer %s %s", s.contender, s.workload,
			s.drain.Round(time.Millisecond), idealDrain(int(sum(s.shares))).Round(time.Millisecond), sharesText(s.shares), s.failed())
	default:
		return fmt.Sprintf("  %-36s %-28s %4d B pub %8.0f/s sub %8.0f/s cmds/msg %.2f trips/msg %.3f %s",
			s.contender, s.workload, s.size, s.pubRate, s.subRate, s.cmdsPerMsg, s.tripsPerMsg, s.failed())
	}
}
