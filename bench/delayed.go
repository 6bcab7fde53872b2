package main

import (
	"context"
	"fmt"

	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Delayed messages (Watermill's delay metadata on redisbus Streams).
const (
	cDelayed = "redisbus Streams, delayed messages"
	// wDelayedSpread: n messages due within one second; wDelayedBacklog:
	// n messages due at the same instant.
	wDelayedSpread  = "delayed: due within one second"
	wDelayedBacklog = "delayed: due at once"
	// delayedMovers is how many subscribers of one group move them.
	delayedMovers = 3
)

// delayed schedules n messages from 16 goroutines, 100 per Publish, due
// within one second (spread) or all at one instant, 2 s ahead, while
// delayedMovers subscribers of one group move and consume them. It
// measures the scheduling rate (pubRate), the rate at which they entered
// the stream once due (subRate), and how late each entered its stream,
// from its entry ID (Redis' clock at the move) and its due time.
func delayed(ctx context.Context, e *env, n int, spread bool) (sample, error) {
	workload := wDelayedBacklog
	if spread {
		workload = wDelayedSpread
	}
	s := sample{contender: cDelayed, family: "streams", workload: workload, size: 64}
	topic := "bench-delayed-" + watermill.NewShortUUID()
	client := e.client(false)
	defer client.Close()
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		return s, err
	}
	defer pub.Close()

	var subs []*redisbus.StreamsSubscriber
	consumed := newTracker(n)
	for i := range delayedMovers {
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client: client, ConsumerGroup: "bench", Consumer: fmt.Sprint("mover-", i), MaxInFlight: 64,
		}, nil)
		if err != nil {
			return s, err
		}
		defer sub.Close()
		messages, err := sub.Subscribe(ctx, topic)
		if err != nil {
			return s, err
		}
		subs = append(subs, sub)
		go func() {
			for msg := range messages {
				consumed.record(msg.Payload)
				msg.Ack()
			}
		}()
	}

	now, err := e.admin.Time(ctx).Result()
	if err != nil {
		return s, err
	}
	start := now.Add(2 * time.Second)
	dueOf := func(i int) time.Time {
		if !spread {
			return start
		}
		return start.Add(time.Duration(i) * time.Second / time.Duration(n))
	}
	const perCall, publishers = 100, 16
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for first := p * perCall; first < n; first += publishers * perCall {
				batch := make([]*message.Message, 0, perCall)
				for i := first; i < min(first+perCall, n); i++ {
					msg := message.NewMessage(watermill.NewUUID(), payload(i, 64))
					due := dueOf(i)
					msg.Metadata.Set(delay.DelayedUntilKey, due.UTC().Format(time.RFC3339Nano))
					msg.Metadata.Set("due_ms", strconv.FormatInt((due.UnixNano()+999_999)/1e6, 10))
					batch = append(batch, msg)
				}
				if err := pub.Publish(topic, batch...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return s, err
	}
	s.pubRate = float64(n) / time.Since(began).Seconds()
	if time.Since(began) > 2*time.Second {
		return s, fmt.Errorf("scheduling %d messages took %s, past their due time", n, time.Since(began))
	}
	if err := consumed.wait(ctx, workloadTimeout); err != nil {
		consumed.tally(&s)
		return s, err
	}
	consumed.tally(&s)

	entries, err := e.admin.XRange(ctx, topic, "-", "+").Result()
	if err != nil {
		return s, err
	}
	if len(entries) != n {
		return s, fmt.Errorf("%d entries in the stream for %d messages", len(entries), n)
	}
	log := &latencyLog{}
	var last int64
	for _, entry := range entries {
		ms, _, _ := strings.Cut(entry.ID, "-")
		moved, _ := strconv.ParseInt(ms, 10, 64)
		meta, _ := entry.Values[redisbus.StreamsFieldMetadata].(string)
		dueMs, err := dueMsOf(meta)
		if err != nil {
			return s, err
		}
		if moved < dueMs {
			return s, fmt.Errorf("entry %s entered its stream %d ms before its due time", entry.ID, dueMs-moved)
		}
		log.add(time.Duration(moved-dueMs) * time.Millisecond)
		last = max(last, moved)
	}
	first := (start.UnixNano() + 999_999) / 1e6
	s.subRate = float64(n) / (float64(last-first+1) / 1000)
	s.p50, s.p99, s.p999, err = log.percentiles()
	for _, sub := range subs {
		s.cmdsPerMsg += float64(sub.Stats().DelayedMoved)
	}
	if s.cmdsPerMsg != float64(n) {
		return s, fmt.Errorf("the movers moved %.0f messages of %d", s.cmdsPerMsg, n)
	}
	s.cmdsPerMsg = 0
	return s, err
}

// dueMsOf reads the due_ms metadata from an entry's MessagePack metadata,
// decoded as the subscriber does.
func dueMsOf(metadata string) (int64, error) {
	msg, err := (redisbus.DefaultStreamsMarshaler{}).Unmarshal("", map[string]any{
		redisbus.StreamsFieldMetadata: metadata, redisbus.StreamsFieldPayload: "",
	})
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(msg.Metadata.Get("due_ms"), 10, 64)
}

// delayedSection reports the delayed-message workloads.
func (r *report) delayedSection(b *strings.Builder) {
	if !r.ran(cDelayed) {
		return
	}
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("\n## Delayed messages\n\n")
	w("Messages with Watermill's delay metadata, published 100 per call from 16 goroutines, due 2 s later either spread over one second or all at the same instant; %d subscribers of one group move them into the stream as they fall due and consume them. ", delayedMovers)
	w("Scheduling is the publishers' rate; moving is messages over the time from the first due time to the last entry's ID; lateness is each entry's ID (Redis' clock when it was moved) minus its due time. Medians of the rounds.\n\n")
	w("| Messages due | Scheduled msg/s | Moved msg/s | Lateness p50 | p99 | p99.9 |\n|---|---|---|---|---|---|\n")
	for _, workload := range []string{wDelayedSpread, wDelayedBacklog} {
		sched, ok := r.stat(workload, 64, cDelayed, pub)
		if !ok {
			continue
		}
		moved, _ := r.stat(workload, 64, cDelayed, sub)
		a, _ := r.stat(workload, 64, cDelayed, p50)
		z, _ := r.stat(workload, 64, cDelayed, p99)
		y, _ := r.stat(workload, 64, cDelayed, func(s sample) float64 { return float64(s.p999) })
		w("| %s (%s) | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(workload, "delayed: "), human(float64(r.delayedN())), human(sched.median), human(moved.median), dur(a.median), dur(z.median), dur(y.median))
	}
}

func (r *report) delayedN() int { return min(r.o.n, delayedMax) }

// delayedMax bounds the delayed workloads: scheduling must end before the
// messages fall due.
const delayedMax = 10_000
