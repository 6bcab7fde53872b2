package redisbus

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/sendonce"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// coalescerPipelines is how many pipelines a coalescer for waiting callers
// keeps in flight: while one waits for Redis, the next batch is gathered and
// sent. Measured on a 2-core machine, two beat one (no overlap) and three
// (smaller batches, more write syscalls). Calls that nobody waits for use
// one pipeline at a time (see newCoalescer).
const coalescerPipelines = 2

// coalescer sends the commands of concurrent callers together. A caller
// hands over the commands it wants run; whatever calls are waiting when a
// pipeline is free go to Redis in one round trip, up to maxBatch commands.
// A lone call is sent at once: nothing waits for a batch to fill.
type coalescer struct {
	client redis.UniversalClient
	// policy sends a pipeline again when none of it ran (see send).
	policy sendonce.Policy
	// route, when set, picks the client each pipeline goes to; see
	// clusterPublishRoute.
	route    func(ctx context.Context) (*redis.Client, error)
	maxBatch int
	// wait, when set, ends every pipeline with a WAIT for replicas; see
	// StreamsPublisherConfig.WaitReplicas. Set before the first call.
	wait  *replicaWait
	calls chan *coalescedCall
	// closing refuses new calls; stop ends the flushers once their
	// pipeline returns; abandon releases the callers still waiting when
	// a pipeline does not return in time (see close).
	closing, stop, abandon chan struct{}
	abandoned              atomic.Int64 // calls released by abandon unanswered
	wg                     sync.WaitGroup
	// ctx is the pipelines' context: close cancels it, so that a Redis that
	// does not answer cannot hold close up.
	ctx    context.Context
	cancel context.CancelFunc
}

// pipelineAdder adds one call's commands to a pipeline. addTo runs on a
// flusher goroutine; the caller reads its commands' results after do
// returns.
type pipelineAdder interface {
	addTo(pipe redis.Pipeliner)
}

// asyncAdder is a pipelineAdder whose caller does not wait: finished runs
// on the flusher once the commands have their replies (sent) or will never
// be sent (the coalescer closed, or err says why).
type asyncAdder interface {
	pipelineAdder
	finished(sent bool, err error)
}

type coalescedCall struct {
	ctx   context.Context
	size  int // commands add adds
	add   pipelineAdder
	async asyncAdder // set for calls from submit: nobody waits on done
	sent  bool       // add ran: its commands carry the results
	// taken says a flusher took the call from the queue: one not taken
	// when close gives up was never sent.
	taken atomic.Bool
	err   error // the pipeline could not be sent at all
	// done is signalled once by the flusher. It is buffered so that the
	// flusher never waits for a caller, and reused: calls come from
	// callPool, because a channel per call was a measurable share of the
	// publish path.
	done chan struct{}
}

var callPool = sync.Pool{New: func() any { return &coalescedCall{done: make(chan struct{}, 1)} }}

// newCoalescer starts a coalescer whose queue holds up to queue calls
// waiting for a pipeline. An ordered coalescer sends one pipeline at a time,
// so calls reach Redis in the order they were queued: asynchronous callers
// need that, since nothing else orders one goroutine's calls. Otherwise
// coalescerPipelines pipelines overlap.
func newCoalescer(client redis.UniversalClient, maxBatch, queue int, ordered bool) *coalescer {
	c := &coalescer{
		client:   client,
		policy:   sendonce.PolicyOf(client),
		maxBatch: maxBatch,
		calls:    make(chan *coalescedCall, queue),
		closing:  make(chan struct{}),
		stop:     make(chan struct{}),
		abandon:  make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	pipelines := coalescerPipelines
	if ordered {
		pipelines = 1
	}
	for range pipelines {
		c.wg.Go(c.flush)
	}
	return c
}

// do runs add's commands in a shared pipeline and returns nil when they
// have their replies. It fails when ctx is done first, or when the
// coalescer closes first (errClosedInFlight); the commands may still run
// then.
func (c *coalescer) do(ctx context.Context, size int, add pipelineAdder) error {
	call := callPool.Get().(*coalescedCall)
	call.ctx, call.size, call.add, call.sent = ctx, size, add, false
	call.taken.Store(false)
	select {
	case c.calls <- call:
	case <-ctx.Done():
		call.ctx, call.add = nil, nil
		callPool.Put(call)
		return context.Cause(ctx)
	case <-c.closing:
		call.ctx, call.add = nil, nil
		callPool.Put(call)
		return ErrPublisherClosed
	}
	select {
	case <-call.done:
		return c.reuse(call, ctx)
	case <-ctx.Done():
		// A flusher holds the call and will signal it: it cannot be reused.
		return context.Cause(ctx)
	case <-c.abandon:
		select {
		case <-call.done: // answered after all
			return c.reuse(call, ctx)
		default:
		}
		// Still queued, or in a pipeline Redis has not answered. Either
		// way a flusher or drain may hold the call: it is not reused.
		if !call.taken.Load() {
			return errUnsentAtClose // close sends nothing after it gave up
		}
		c.abandoned.Add(1)
		return errClosedInFlight
	}
}

// reuse returns a finished call to the pool and the error its caller gets.
func (c *coalescer) reuse(call *coalescedCall, ctx context.Context) error {
	sent, err := call.sent, call.err
	call.ctx, call.add, call.err = nil, nil, nil
	callPool.Put(call)
	switch {
	case err != nil:
		return err
	case !sent && ctx.Err() != nil:
		return context.Cause(ctx)
	case !sent:
		return errUnsentAtClose
	}
	return nil
}

// errClosedInFlight is what a publish gets when Close gave up waiting for
// Redis' reply. Like every error of a publish that Close ended, it matches
// ErrPublisherClosed.
var errClosedInFlight = fmt.Errorf("%w before Redis answered; the message may or may not have been published", ErrPublisherClosed)

// submit queues add's commands and returns without waiting for them;
// add.finished reports the outcome. ctx bounds only the wait while the queue
// is full: once queued, the call is sent whatever becomes of ctx.
func (c *coalescer) submit(ctx context.Context, size int, add asyncAdder) error {
	call := &coalescedCall{ctx: context.Background(), size: size, add: add, async: add}
	select {
	case c.calls <- call:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-c.closing:
		return ErrPublisherClosed
	}
}

// beginClose refuses new calls; those queued are still sent.
func (c *coalescer) beginClose() {
	select {
	case <-c.closing:
	default:
		close(c.closing)
	}
}

// close stops the flushers: a pipeline in flight is cancelled, and waited
// for until deadline; callers still waiting then are released with
// errClosedInFlight, and the flusher that waits on go-redis exits when the
// client's read timeout ends the round trip. Calls still queued finish
// unsent. No do or submit may be in progress or follow (beginClose first,
// then wait for them).
func (c *coalescer) close(deadline time.Time) {
	c.beginClose()
	c.cancel()
	close(c.stop)
	flushed := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(flushed)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-flushed:
	case <-timer.C:
	}
	close(c.abandon)
}

// drain finishes the calls still queued as unsent, once no do or submit is
// in progress.
func (c *coalescer) drain() {
	for {
		select {
		case call := <-c.calls:
			c.finish(call)
		default:
			return
		}
	}
}

// finish tells the call's caller that it is done.
func (c *coalescer) finish(call *coalescedCall) {
	if call.async != nil {
		call.async.finished(call.sent, call.err)
		return
	}
	call.done <- struct{}{}
}

func (c *coalescer) flush() {
	var batch []*coalescedCall
	for {
		select {
		case call := <-c.calls:
			call.taken.Store(true)
			batch = append(batch[:0], call)
		case <-c.stop:
			return
		}
		size := c.gather(&batch, batch[0].size)
		if size < c.maxBatch {
			// The callers a finished pipeline woke are runnable but may not
			// have run yet: let them hand in their calls before sending.
			// This one yield more than doubled the batch size with 64
			// publishers on 2 cores, and with it the throughput.
			runtime.Gosched()
			c.gather(&batch, size)
		}
		if target, err := c.target(); err != nil {
			for _, call := range batch {
				call.err = err
			}
		} else {
			c.send(target, batch)
		}
		for _, call := range batch {
			c.finish(call)
		}
		clear(batch) // let finished calls go
	}
}

// send runs the batch in one pipeline. Its commands are sent at most once
// by go-redis (see sendonce), so that one Redis ran but answered late is
// never run twice; the whole pipeline is sent again, with the client's
// retry settings, only when every command of it failed in a way that
// proves it did not run (no connection, Redis loading, a replica).
func (c *coalescer) send(target redis.Cmdable, batch []*coalescedCall) {
	var wait *redis.IntCmd
	_ = c.policy.Retry(c.ctx, func() error {
		cmds, err := target.Pipelined(c.ctx, func(pipe redis.Pipeliner) error {
			for _, call := range batch {
				call.sent = false
				if call.ctx.Err() == nil && c.ctx.Err() == nil { // otherwise its caller gave up, or close did: send nothing for it
					call.add.addTo(pipe)
					call.sent = true
				}
			}
			if c.wait != nil {
				// In a pipeline the client's ReadTimeout bounds the reply,
				// hence WaitTimeout below it (see Validate).
				wait = redis.NewIntCmd(c.ctx, "wait", c.wait.replicas, c.wait.timeout.Milliseconds())
				_ = pipe.Process(c.ctx, wait)
			}
			return nil
		})
		stampPipelineError(cmds, err)
		c.stampClosedInFlight(cmds)
		for _, cmd := range cmds {
			if slotmap.Stale(cmd.Err()) {
				slotmap.Refresh(cmd.Err(), c.client)
				break
			}
		}
		return noneExecuted(cmds)
	})
	if wait != nil {
		c.wait.check(wait, batch)
	}
}

// stampPipelineError gives err to every command of cmds that has no
// result of its own when err is the pipeline's, not one of its commands':
// go-redis leaves the commands untouched when the connection could not be
// set up with a Redis error (a wrong password: WRONGPASS, NOAUTH), and
// they would read as successful.
func stampPipelineError(cmds []redis.Cmder, err error) {
	if err == nil {
		return
	}
	for _, cmd := range cmds {
		if cmd.Err() == err {
			return // a command's own error: the others have theirs
		}
	}
	for _, cmd := range cmds {
		if cmd.Err() == nil {
			cmd.SetErr(err)
		}
	}
}

// stampClosedInFlight gives errClosedInFlight to the commands that close
// ended by cancelling the pipeline's context: their callers learn that
// Close, not their own context, ended the publish.
func (c *coalescer) stampClosedInFlight(cmds []redis.Cmder) {
	if c.ctx.Err() == nil {
		return
	}
	for _, cmd := range cmds {
		if errors.Is(cmd.Err(), context.Canceled) {
			cmd.SetErr(errClosedInFlight)
		}
	}
}

// noneExecuted returns an error that proves no command of cmds ran, or nil
// when some may have.
func noneExecuted(cmds []redis.Cmder) error {
	var first error
	for _, cmd := range cmds {
		if !sendonce.NotExecuted(cmd.Err()) {
			return nil
		}
		if first == nil {
			first = cmd.Err()
		}
	}
	return first
}

// target is the client the next pipeline goes to.
func (c *coalescer) target() (redis.Cmdable, error) {
	if c.route == nil {
		return c.client, nil
	}
	return c.route(c.ctx)
}

// gather appends the calls waiting now to batch, up to maxBatch commands,
// and returns the batch's size in commands.
func (c *coalescer) gather(batch *[]*coalescedCall, size int) int {
	for size < c.maxBatch {
		select {
		case call := <-c.calls:
			call.taken.Store(true)
			*batch = append(*batch, call)
			size += call.size
		default:
			return size
		}
	}
	return size
}

// replicaWait makes a pipeline's calls succeed only once enough replicas
// have their writes: WAIT, sent after them on the same connection, returns
// how many replicas acknowledged everything the connection wrote.
type replicaWait struct {
	replicas int
	timeout  time.Duration
}

// check fails the sent calls of batch when WAIT did not confirm enough
// replicas. Their commands did run: the entries are stored on the primary,
// which a failover before the replicas caught up would lose.
func (w *replicaWait) check(wait *redis.IntCmd, batch []*coalescedCall) {
	failure := w.confirmed(wait)
	if failure == nil {
		return
	}
	for _, call := range batch {
		if call.sent && call.err == nil {
			call.err = failure
		}
	}
}

// confirmed returns nil if WAIT confirmed enough replicas, and otherwise
// why the writes before it are not confirmed.
func (w *replicaWait) confirmed(wait *redis.IntCmd) error {
	confirmed, err := wait.Result()
	if err == nil && confirmed >= int64(w.replicas) {
		return nil
	}
	switch {
	case err != nil && permanent(err):
		// Not a replica falling behind but a refusal (an ACL without
		// +wait, say) that every retry would meet, storing the entries
		// again each time: not ErrNotReplicated.
		return fmt.Errorf("redisbus: the entries are stored, but Redis refused WAIT: %w", err)
	case err != nil:
		return fmt.Errorf("%w: WAIT for %d failed: %w", ErrNotReplicated, w.replicas, err)
	}
	return fmt.Errorf("%w: %d of %d confirmed within %s", ErrNotReplicated, confirmed, w.replicas, w.timeout)
}
