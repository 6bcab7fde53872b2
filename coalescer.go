package redisbus

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// coalescerPipelines is how many pipelines a coalescer keeps in flight:
// while one waits for Redis, the next batch is gathered and sent. Measured
// on a 2-core machine, two beat one (no overlap) and four (smaller batches,
// more contention).
const coalescerPipelines = 2

// coalescer sends the commands of concurrent callers together. A caller
// hands over a function that adds its commands to a pipeline; whatever
// calls are waiting when a pipeline is free go to Redis in one round trip,
// up to maxBatch commands. A lone call is sent at once: nothing waits for a
// batch to fill.
type coalescer struct {
	client   redis.UniversalClient
	maxBatch int
	calls    chan *coalescedCall
	stop     chan struct{}
	wg       sync.WaitGroup
}

type coalescedCall struct {
	ctx  context.Context
	size int                        // commands add adds
	add  func(pipe redis.Pipeliner) // runs on a flusher goroutine
	sent bool                       // add ran: its commands carry the results
	done chan struct{}
}

func newCoalescer(client redis.UniversalClient, maxBatch int) *coalescer {
	c := &coalescer{
		client:   client,
		maxBatch: maxBatch,
		calls:    make(chan *coalescedCall, maxBatch),
		stop:     make(chan struct{}),
	}
	for range coalescerPipelines {
		c.wg.Go(c.flush)
	}
	return c
}

// do runs add's commands in a shared pipeline and returns nil when they
// have their replies, which the caller then reads from its commands. It
// fails when ctx is done first; the commands may still run then.
func (c *coalescer) do(ctx context.Context, size int, add func(pipe redis.Pipeliner)) error {
	call := &coalescedCall{ctx: ctx, size: size, add: add, done: make(chan struct{})}
	select {
	case c.calls <- call:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	select {
	case <-call.done:
		if !call.sent {
			return context.Cause(ctx)
		}
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// close stops the flushers; calls in progress must have returned.
func (c *coalescer) close() {
	close(c.stop)
	c.wg.Wait()
}

func (c *coalescer) flush() {
	var batch []*coalescedCall
	for {
		select {
		case call := <-c.calls:
			batch = append(batch[:0], call)
		case <-c.stop:
			return
		}
		size := batch[0].size
	gather:
		for size < c.maxBatch {
			select {
			case call := <-c.calls:
				batch = append(batch, call)
				size += call.size
			default:
				break gather
			}
		}
		_, _ = c.client.Pipelined(context.Background(), func(pipe redis.Pipeliner) error {
			for _, call := range batch {
				if call.ctx.Err() == nil { // otherwise its caller has given up: send nothing for it
					call.add(pipe)
					call.sent = true
				}
			}
			return nil
		})
		for _, call := range batch {
			close(call.done)
		}
	}
}
