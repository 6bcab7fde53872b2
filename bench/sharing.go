package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Workload 6: a backlog waits in a stream before several consumers of one
// group start, each its own subscriber and Router with a slow handler, as
// workers of a job queue run. How evenly they share it, and how close the
// backlog's drain time comes to the ideal: every consumer busy all along.
const (
	w6             = "shared backlog, slow handlers"
	shareConsumers = 3
	shareWork      = 5 * time.Millisecond
)

// sharedBacklog runs workload 6 with n messages.
func sharedBacklog(ctx context.Context, e *env, c *contender, n int) (sample, error) {
	e = e.of(c)
	s := sample{contender: c.name, family: c.family, workload: w6, size: 64, peer: c.peer}
	topic := "bench-" + watermill.NewShortUUID()
	t := newTracker(n)
	var releases []func()
	defer func() {
		for _, release := range releases {
			release()
		}
		t.tally(&s)
		s.pending = pendingIf(ctx, e, c, topic)
		cleanup(ctx, e, topic)
	}()

	var subs []message.Subscriber
	var pub message.Publisher
	for i := range shareConsumers {
		p, sub, release := c.watermill(e, n)
		releases = append(releases, release)
		subs = append(subs, sub)
		if i == 0 {
			pub = p
		}
	}
	if err := initTopic(c, e, subs[0], topic); err != nil {
		return s, err
	}
	msgs := messages(n, 64)
	if _, err := publishAll(ctx, pub, n, 16, func(i int) error { return pub.Publish(topic, msgs[i]) }); err != nil {
		return s, err
	}

	shares := make([]atomic.Int64, shareConsumers)
	start := time.Now()
	for i, sub := range subs {
		router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
		if err != nil {
			return s, err
		}
		router.AddConsumerHandler("bench", topic, sub, func(msg *message.Message) error {
			time.Sleep(shareWork)
			msg.Ack()
			shares[i].Add(1)
			t.record(msg.Payload)
			return nil
		})
		go func() { _ = router.Run(context.Background()) }()
		releases = append([]func(){func() { _ = router.Close() }}, releases...)
	}
	if err := t.wait(ctx, workloadTimeout); err != nil {
		return s, err
	}
	s.drain = time.Since(start)
	s.subRate = rate(n, s.drain)
	for i := range shares {
		s.shares = append(s.shares, shares[i].Load())
	}
	return s, nil
}

// idealDrain is the drain time with every consumer busy all along.
func idealDrain(n int) time.Duration {
	return time.Duration(n) * shareWork / shareConsumers
}

func sum(values []int64) int64 {
	total := int64(0)
	for _, v := range values {
		total += v
	}
	return total
}

// sharesText shows how many messages each consumer handled, fewest first.
func sharesText(shares []int64) string {
	sorted := slices.Sorted(slices.Values(shares))
	parts := make([]string, len(sorted))
	for i, n := range sorted {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, " / ")
}

// sharedBacklogTable writes workload 6.
func (r *report) sharedBacklogTable(b *strings.Builder) {
	n := r.o.sharedN
	fmt.Fprintf(b, "| Contender | Drain time | × ideal (%s) | Messages per consumer (one run, fewest first) | Fewest × fair share |\n|---|---|---|---|---|\n",
		idealDrain(n).Round(time.Millisecond))
	for _, c := range r.contenders(w6) {
		d, _ := r.stat(w6, 64, c, func(s sample) float64 { return float64(s.drain) })
		var shares []int64
		for _, s := range r.samples {
			if s.workload == w6 && s.contender == c && len(s.shares) > 0 {
				shares = s.shares
			}
		}
		fewest := 0.0
		if len(shares) > 0 {
			fewest = float64(slices.Min(shares)) / (float64(n) / shareConsumers)
		}
		fmt.Fprintf(b, "| %s | %s | %.2f | %s | %.2f |\n", c, dur(d.median), d.median/float64(idealDrain(n)), sharesText(shares), fewest)
	}
}
