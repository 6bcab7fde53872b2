package main

import (
	"context"
	"errors"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"
)

// rawWorkloads run the workloads with go-redis alone: the most this Redis
// and this machine do, without any library in between.
type rawWorkloads interface {
	publish(ctx context.Context, e *env, topic string, n, size int) (time.Duration, error)
	publishThenConsume(ctx context.Context, e *env, topic string, n, size int) (pub, sub time.Duration, t *tracker, err error)
	concurrent(ctx context.Context, e *env, topic string, n, size int) (time.Duration, *tracker, error)
	latency(ctx context.Context, e *env, topic string, perSecond, n, size int, log *latencyLog) error
}

// rawBatch is the pipeline size raw publishers use.
const rawBatch = 100

// pipelinedPublish sends n commands built by add in pipelines of rawBatch
// from 8 goroutines.
func pipelinedPublish(ctx context.Context, client *redis.Client, n int, add func(pipe redis.Pipeliner, i int)) (time.Duration, error) {
	batches := (n + rawBatch - 1) / rawBatch
	return publishers(batches, 8, func(b int) error {
		_, err := client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i := b * rawBatch; i < min(n, (b+1)*rawBatch); i++ {
				add(pipe, i)
			}
			return nil
		})
		return err
	})
}

// rawPubSub is PUBLISH and SUBSCRIBE. coalesced publishes one message per
// call (see coalescedPublish) instead of in pipelines of rawBatch.
type rawPubSub struct{ coalesced bool }

func (r rawPubSub) send(ctx context.Context, client *redis.Client, topic string, n, size int) (time.Duration, error) {
	add := func(pipe redis.Pipeliner, i int) { pipe.Publish(ctx, topic, payload(i, size)) }
	if r.coalesced {
		return coalescedPublish(ctx, client, n, add)
	}
	return pipelinedPublish(ctx, client, n, add)
}

func (rawPubSub) subscribe(ctx context.Context, client *redis.Client, topic string, t *tracker, log *latencyLog) (func(), error) {
	ps := client.Subscribe(ctx, topic)
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := ps.ReceiveMessage(ctx)
			if err != nil {
				return
			}
			p := []byte(msg.Payload)
			if log != nil {
				log.add(time.Since(sentAt(p)))
			}
			t.record(p)
		}
	}()
	return func() { _ = ps.Close(); <-done }, nil
}

func (r rawPubSub) publish(ctx context.Context, e *env, topic string, n, size int) (time.Duration, error) {
	client := e.client(false)
	defer client.Close()
	return r.send(ctx, client, topic, n, size)
}

func (r rawPubSub) publishThenConsume(ctx context.Context, e *env, topic string, n, size int) (time.Duration, time.Duration, *tracker, error) {
	// Pub/Sub cannot keep messages for later: the subscriber receives while
	// the publishers send.
	client := e.client(false)
	defer client.Close()
	t := newTracker(n)
	stop, err := r.subscribe(ctx, client, topic, t, nil)
	if err != nil {
		return 0, 0, nil, err
	}
	defer stop()
	pub, err := r.send(ctx, client, topic, n, size)
	if err != nil {
		return 0, 0, t, err
	}
	if err := t.wait(ctx, workloadTimeout); err != nil {
		return pub, 0, t, err
	}
	return pub, time.Duration(t.last.Load() - t.first.Load()), t, nil
}

func (r rawPubSub) concurrent(ctx context.Context, e *env, topic string, n, size int) (time.Duration, *tracker, error) {
	client := e.client(false)
	defer client.Close()
	t := newTracker(n)
	stop, err := r.subscribe(ctx, client, topic, t, nil)
	if err != nil {
		return 0, nil, err
	}
	defer stop()
	start := time.Now()
	if _, err := r.send(ctx, client, topic, n, size); err != nil {
		return 0, t, err
	}
	err = t.wait(ctx, workloadTimeout)
	return time.Since(start), t, err
}

func (r rawPubSub) latency(ctx context.Context, e *env, topic string, perSecond, n, size int, log *latencyLog) error {
	client := e.client(false)
	defer client.Close()
	t := newTracker(n)
	stop, err := r.subscribe(ctx, client, topic, t, log)
	if err != nil {
		return err
	}
	defer stop()
	err = openLoop(ctx, perSecond, n, func(i int) error {
		p := payload(i, size)
		stamp(p)
		return client.Publish(ctx, topic, p).Err()
	})
	if err != nil {
		return err
	}
	return t.wait(ctx, workloadTimeout)
}

// rawStreams is XADD, and XREADGROUP with batched XACK. coalesced
// publishes one message per call (see coalescedPublish).
type rawStreams struct{ coalesced bool }

func (rawStreams) xadd(ctx context.Context, pipe redis.Cmdable, topic string, p []byte) {
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: []any{"payload", p}})
}

// consume reads the group in batches of 1000 and acks each batch in one
// XACK, until t has all messages or stop is closed.
func (rawStreams) consume(ctx context.Context, client *redis.Client, topic string, t *tracker, log *latencyLog, block time.Duration) error {
	for {
		select {
		case <-t.done:
			return nil
		default:
		}
		streams, err := client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: benchGroup, Consumer: "raw", Streams: []string{topic, ">"}, Count: 1000, Block: block,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(streams[0].Messages))
		for _, m := range streams[0].Messages {
			p := []byte(m.Values["payload"].(string))
			if log != nil {
				log.add(time.Since(sentAt(p)))
			}
			t.record(p)
			ids = append(ids, m.ID)
		}
		if err := client.XAck(ctx, topic, benchGroup, ids...).Err(); err != nil {
			return err
		}
	}
}

func (r rawStreams) publish(ctx context.Context, e *env, topic string, n, size int) (time.Duration, error) {
	client := e.client(false)
	defer client.Close()
	add := func(pipe redis.Pipeliner, i int) { r.xadd(ctx, pipe, topic, payload(i, size)) }
	if r.coalesced {
		return coalescedPublish(ctx, client, n, add)
	}
	return pipelinedPublish(ctx, client, n, add)
}

func (r rawStreams) publishThenConsume(ctx context.Context, e *env, topic string, n, size int) (time.Duration, time.Duration, *tracker, error) {
	client := e.client(false)
	defer client.Close()
	if err := client.XGroupCreateMkStream(ctx, topic, benchGroup, "0").Err(); err != nil {
		return 0, 0, nil, err
	}
	pub, err := r.publish(ctx, e, topic, n, size)
	if err != nil {
		return 0, 0, nil, err
	}
	t := newTracker(n)
	start := time.Now()
	if err := r.consume(ctx, client, topic, t, nil, 100*time.Millisecond); err != nil {
		return pub, 0, t, err
	}
	return pub, time.Since(start), t, nil
}

func (r rawStreams) concurrent(ctx context.Context, e *env, topic string, n, size int) (time.Duration, *tracker, error) {
	client := e.client(false)
	defer client.Close()
	if err := client.XGroupCreateMkStream(ctx, topic, benchGroup, "0").Err(); err != nil {
		return 0, nil, err
	}
	t := newTracker(n)
	start := time.Now()
	consumed := make(chan error, 1)
	go func() { consumed <- r.consume(ctx, client, topic, t, nil, 100*time.Millisecond) }()
	if _, err := r.publish(ctx, e, topic, n, size); err != nil {
		return 0, t, err
	}
	err := <-consumed
	return time.Since(start), t, err
}

func (r rawStreams) latency(ctx context.Context, e *env, topic string, perSecond, n, size int, log *latencyLog) error {
	client := e.client(false)
	defer client.Close()
	if err := client.XGroupCreateMkStream(ctx, topic, benchGroup, "$").Err(); err != nil {
		return err
	}
	t := newTracker(n)
	consumed := make(chan error, 1)
	go func() { consumed <- r.consume(ctx, client, topic, t, log, time.Second) }()
	err := openLoop(ctx, perSecond, n, func(i int) error {
		p := payload(i, size)
		stamp(p)
		return client.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: []any{"payload", p}}).Err()
	})
	if err != nil {
		return err
	}
	return <-consumed
}

// coalescedPublish publishes like the Watermill contenders are asked to:
// 64 goroutines, one message per call, each call waiting for its reply;
// calls are coalesced into shared pipelines by the simplest code that does
// it as well as redisbus does (two pipelines in flight, one yield before
// sending so that woken callers can join the batch). It is the ceiling of
// that calling pattern on this machine, without any library overhead.
func coalescedPublish(ctx context.Context, client *redis.Client, n int, add func(pipe redis.Pipeliner, i int)) (time.Duration, error) {
	type call struct {
		i    int
		done chan error
	}
	calls := make(chan call, 1024)
	defer close(calls)
	gather := func(batch []call) []call {
		for len(batch) < 512 {
			select {
			case c, ok := <-calls:
				if !ok {
					return batch
				}
				batch = append(batch, c)
			default:
				return batch
			}
		}
		return batch
	}
	for range 2 {
		go func() {
			batch := make([]call, 0, 512)
			for c := range calls {
				batch = gather(append(batch[:0], c))
				runtime.Gosched()
				batch = gather(batch)
				_, err := client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
					for _, c := range batch {
						add(pipe, c.i)
					}
					return nil
				})
				for _, c := range batch {
					c.done <- err
				}
			}
		}()
	}
	return publishers(n, 64, func(i int) error {
		c := call{i: i, done: make(chan error, 1)}
		calls <- c
		return <-c.done
	})
}
