package main

import (
	"fmt"
	"slices"
	"strings"
)

// The report's sections on the topologies past one Redis: WaitReplicas on
// a primary with a replica, and the cluster section.

// busiest is the CPU per message of the master that worked hardest.
func busiest(s sample) float64 {
	if len(s.masterCPU) == 0 {
		return 0
	}
	return slices.Max(s.masterCPU)
}

// busiestCmds is the commands per message of the master that received the
// most.
func busiestCmds(s sample) float64 {
	if len(s.masterCmds) == 0 {
		return 0
	}
	return slices.Max(s.masterCmds)
}

// ceiling is the rate at which the busiest master's CPU would run out,
// were it alone on a core: 1 s over its CPU per message.
func ceiling(s sample) float64 {
	if b := busiest(s); b > 0 {
		return 1e6 / b
	}
	return 0
}

// last is the contender's last sample of workload, whose per-master
// breakdown the tables show.
func (r *report) last(workload, contender string) (sample, bool) {
	var found sample
	ok := false
	for _, s := range r.samples {
		if s.workload == workload && s.contender == contender {
			found, ok = s, true
		}
	}
	return found, ok
}

// shares formats each master's part of the CPU the masters spent, in the
// order of the cluster's masters, e.g. "35% / 31% / 34%".
func shares(s sample) string {
	total := 0.0
	for _, v := range s.masterCPU {
		total += v
	}
	if total <= 0 {
		return "–"
	}
	parts := make([]string, len(s.masterCPU))
	for i, v := range s.masterCPU {
		parts[i] = fmt.Sprintf("%.0f%%", 100*v/total)
	}
	return strings.Join(parts, " / ")
}

func topicSpread(s sample) string {
	parts := make([]string, len(s.masterTopics))
	for i, n := range s.masterTopics {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, " / ")
}

// clusterScaling compares the fewest masters run with the most, per
// cluster contender: "" when the run has not both.
func (r *report) clusterScaling(contender string) (few, many int, ok bool) {
	var ran []int
	for _, masters := range r.o.cluster {
		if _, found := r.stat(clusterWorkload(masters), 64, contender, busiest); found {
			ran = append(ran, masters)
		}
	}
	if len(ran) < 2 {
		return 0, 0, false
	}
	return slices.Min(ran), slices.Max(ran), true
}

// clusterRatio is measure on many masters over measure on few.
func (r *report) clusterRatio(contender string, few, many int, measure func(sample) float64) float64 {
	a, _ := r.stat(clusterWorkload(few), 64, contender, measure)
	b, _ := r.stat(clusterWorkload(many), 64, contender, measure)
	if a.median == 0 {
		return 0
	}
	return b.median / a.median
}

func (r *report) clusterSection(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	ran := false
	for _, c := range clusterContenders {
		for _, masters := range r.o.cluster {
			if _, ok := r.last(clusterWorkload(masters), c); ok {
				ran = true
			}
		}
	}
	if !ran {
		return
	}
	w("\n## Redis Cluster: %s masters\n\n", joinInts(r.o.cluster, " and "))
	w("Private Redis Clusters on loopback (the same `redis-server`, in cluster mode, no replicas), one of each size, started once and taking turns in every round. ")
	w("%d messages of 64 B over %d topics whose names share no hash tag, so that their streams and shard channels hash all over the 16384 slots, and so over the masters; the publisher and subscriber use one `ClusterClient` each. ", r.o.n, r.o.clusterTopics)
	w("**Streams**: 64 goroutines publish, one message per `Publish`; then one subscriber of a consumer group consumes through a Router with a handler per topic (`MaxInFlight` 1, in order per topic). ")
	w("**Sharded Pub/Sub**: `PublisherConfig.Sharded` and `SubscriberConfig.Sharded` (`SPUBLISH`, `SSUBSCRIBE`: a connection per topic, to the master that owns it), the Router subscribed first; *consume* is the rate from the first publish to the last delivery. ")
	w("**Pub/Sub, not sharded**, for comparison, the same way: redisbus sends every `PUBLISH` through one master, to keep order, and the subscriber has one connection for all topics; a cluster passes every `PUBLISH` to every node over its bus, so every master works for every message.\n\n")
	w("How to read it: this machine has %d cores for the client and every master, so adding masters cannot add CPU, and msg/s does not rise with them here. ", r.machine.cores)
	w("What a cluster divides is the work per master, which is what bounds a real deployment, where each master has a core (or a host) of its own: ")
	w("*Busiest master* is the master that spent the most CPU per message; *Redis-bound ceiling* is 1 s over that, the rate at which that master's CPU would run out were it alone on its core (derived, not measured: the client runs out first here). ")
	w("*CPU share per master* and *Topics per master* are in the masters' order, from one round: a master's share follows how many topics hash to it. ")
	w("Redis CPU is `used_cpu_user` + `used_cpu_sys` of `INFO cpu`, summed over the masters; round trips are counted on every node's connection, so a pipeline split over three masters counts three. ")
	w("Spreading costs something in all: a coalesced pipeline splits into one per master, each smaller, so the masters together spend more CPU and round trips per message than one master does. ")
	w("Sharded Pub/Sub costs Redis more per message than plain Pub/Sub on one master when a subscriber has many topics: each topic has its own connection, and Redis writes each message to it by itself, where one connection for all topics takes many messages per write ")
	w("(in a trial here on one master, 1, 8 and 64 topics cost 1.2, 2.5 and 6.8 µs per message). What sharding buys is that this cost divides among the masters, where plain Pub/Sub's grows with them.\n\n")
	w("| Contender | Masters | Publish msg/s | Consume msg/s | Redis CPU µs/msg, all masters | Busiest master CPU µs/msg | Busiest master cmds/msg | Redis-bound ceiling msg/s | CPU share per master | Topics per master | Round trips/msg |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range clusterContenders {
		for _, masters := range r.o.cluster {
			workload := clusterWorkload(masters)
			one, ok := r.last(workload, c)
			if !ok {
				continue
			}
			p, _ := r.stat(workload, 64, c, pub)
			s, _ := r.stat(workload, 64, c, sub)
			cpu, _ := r.stat(workload, 64, c, func(s sample) float64 { return s.cpuPerMsg })
			top, _ := r.stat(workload, 64, c, busiest)
			topCmds, _ := r.stat(workload, 64, c, busiestCmds)
			ceil, _ := r.stat(workload, 64, c, ceiling)
			t, _ := r.stat(workload, 64, c, trips)
			w("| %s | %d | %s | %s | %.2f | %.2f | %.2f | %s | %s | %s | %.3f |\n", c, masters, p.rate(), s.rate(), cpu.median, top.median, topCmds.median, human(ceil.median), shares(one), topicSpread(one), t.median)
		}
	}
	w("\n")
	for _, c := range clusterContenders {
		few, many, ok := r.clusterScaling(c)
		if !ok {
			continue
		}
		w("- %s, %d masters against %d: the busiest master's CPU per message %.2f×, its commands per message %.2f×, the Redis-bound ceiling %.2f×; ",
			c, many, few, r.clusterRatio(c, few, many, busiest), r.clusterRatio(c, few, many, busiestCmds), r.clusterRatio(c, few, many, ceiling))
		w("the CPU of all masters together %.2f×; on this machine publish %.2f× and consume %.2f×.\n",
			r.clusterRatio(c, few, many, func(s sample) float64 { return s.cpuPerMsg }), r.clusterRatio(c, few, many, pub), r.clusterRatio(c, few, many, sub))
	}
}

func joinInts(values []int, sep string) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, sep)
}

// waitReplicasSection shows what WaitReplicas costs: the same primary
// and replica with and without waiting, and the bench's Redis without a
// replica beside them.
func (r *report) waitReplicasSection(b *strings.Builder) {
	if !r.ran(cWaitReplicas) && !r.ran(cReplicaNoWait) {
		return
	}
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	size := r.size64()
	w("\n## WaitReplicas: what waiting for a replica costs\n\n")
	w("`StreamsPublisherConfig.WaitReplicas` makes `Publish` return only once `WAIT` confirms that many replicas have every entry of the call, so that what a publisher was told is stored survives a failover; one `WAIT` ends each pipeline of coalesced publishes. ")
	w("Both replica rows run on the same primary and replica (see Where the numbers come from), in the same rounds as every other contender; the ratio between them is the cost of waiting, the ratio to redisbus Streams (ordered) on the bench's Redis, which has no replica, adds the cost of replicating. ")
	payloads := "64-byte payloads"
	if size != 64 {
		payloads = fmt.Sprintf("payloads of %d B in workload 1, 64 B elsewhere", size)
	}
	w("Medians; %s; latency (publish to handler, so not the wait itself: a consumer may read an entry before `WAIT` returns) at %d msg/s.\n\n", payloads, r.latencyRate())
	lat := fmt.Sprintf("latency at %d msg/s", r.latencyRate())
	w("| Contender | W1 publish msg/s | W2 end to end msg/s | W3 publish (100 per call) msg/s | p50 | p99 | W1 Redis cmds/msg | W1 round trips/msg |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range []string{cOrdered, cReplicaNoWait, cWaitReplicas} {
		if !r.ran(c) {
			continue
		}
		p1, _ := r.stat(w1, size, c, pub)
		e2, _ := r.stat(w2, 64, c, sub)
		p3, _ := r.stat(w3, 64, c, pub)
		a, _ := r.stat(lat, 64, c, p50)
		z, _ := r.stat(lat, 64, c, p99)
		cmds, _ := r.stat(w1, size, c, func(s sample) float64 { return s.cmdsPerMsg })
		t, _ := r.stat(w1, size, c, trips)
		w("| %s | %s | %s | %s | %s | %s | %.2f | %.3f |\n", c, human(p1.median), human(e2.median), human(p3.median), dur(a.median), dur(z.median), cmds.median, t.median)
	}
	if x, ok := r.ratio(w1, size, cWaitReplicas, cReplicaNoWait, pub); ok {
		w("\n%s publishes at %.2f× the same primary without waiting (workload 1)", cWaitReplicas, x)
		if y, ok := r.ratio(w3, 64, cWaitReplicas, cReplicaNoWait, pub); ok {
			w(", %.2f× with 100 messages per `Publish` (workload 3)", y)
		}
		if z, ok := r.ratio(w2, 64, cWaitReplicas, cReplicaNoWait, sub); ok {
			w(", %.2f× end to end (workload 2)", z)
		}
		if o, ok := r.ratio(w1, size, cWaitReplicas, cOrdered, pub); ok {
			w("; %.2f× redisbus Streams (ordered) on the bench's Redis (workload 1)", o)
		}
		w(".\n")
	}
}

// latencyRate is the rate whose latencies the WaitReplicas section shows.
func (r *report) latencyRate() int {
	if len(r.o.rates) == 0 {
		return 1000
	}
	return r.o.rates[0]
}

// scaleHeadlines are the headlines of the WaitReplicas and cluster
// sections.
func (r *report) scaleHeadlines() []string {
	var lines []string
	size := r.size64()
	if x, ok := r.ratio(w1, size, cWaitReplicas, cReplicaNoWait, pub); ok {
		lines = append(lines, fmt.Sprintf("**WaitReplicas: 1** (workload 1, %d B): Streams publish at %.2f× the same primary and replica without waiting; what it buys is that an acknowledged message survives a failover.", size, x))
	}
	var parts []string
	var few, many int
	for _, c := range clusterContenders {
		f, m, ok := r.clusterScaling(c)
		if !ok {
			continue
		}
		few, many = f, m
		a, _ := r.stat(clusterWorkload(f), 64, c, busiest)
		b, _ := r.stat(clusterWorkload(m), 64, c, busiest)
		parts = append(parts, fmt.Sprintf("%s %.2f µs on %d against %.2f µs on %d", strings.TrimSuffix(c, ", cluster"), b.median, m, a.median, f))
	}
	if len(parts) > 0 {
		lines = append(lines, fmt.Sprintf("**Redis Cluster** (%d topics, %d against %d masters): Redis CPU per message on the busiest master, %s.", r.o.clusterTopics, many, few, strings.Join(parts, "; ")))
	}
	return lines
}
