package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/sendonce"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Client publishes the messages. Required. The Publisher never closes
	// it, so one client can be shared by many publishers and subscribers.
	Client redis.UniversalClient

	// Marshaler encodes messages. Nil means EnvelopeMarshaler.
	Marshaler Marshaler

	// Sharded publishes with SPUBLISH (Redis 7.0+) instead of PUBLISH. In
	// Redis Cluster a shard channel lives only on the shard that owns its
	// slot, instead of being broadcast across the cluster. Subscribers of the
	// topic must set SubscriberConfig.Sharded as well.
	Sharded bool

	// MaxBatchSize bounds how many PUBLISHes go in one pipeline when
	// concurrent Publish calls are coalesced. Zero means 512.
	MaxBatchSize int

	// Async makes Publish return once its messages are queued, before Redis
	// has them, so that a caller never waits for a round trip. A message
	// that then fails to reach Redis is logged, counted in
	// Stats().AsyncFailed and passed to OnAsyncError; Publish itself fails
	// only when the message is invalid, the queue stays full until the
	// message's context is done, or the Publisher is closed. The message's
	// context bounds only that wait: the send goes on after the caller's
	// request ends. Flush waits for the queue; Close sends what is queued,
	// for up to AsyncCloseTimeout. PublishCount always waits for Redis.
	//
	// Async suits fire-and-forget broadcasts (cache invalidation, live
	// updates) from request handlers. It trades the error Publish would
	// return for latency and throughput.
	Async bool

	// AsyncQueueSize bounds the Publish calls queued in Async mode. When
	// the queue is full, Publish waits for room (or for its message's
	// context): a Redis that falls behind slows publishers down instead of
	// growing memory. Zero means 10,000.
	AsyncQueueSize int

	// AsyncCloseTimeout bounds how long Close sends queued messages in Async
	// mode; what is still unsent then is counted as failed. Zero means 5
	// seconds.
	AsyncCloseTimeout time.Duration

	// OnAsyncError, if set, is called for every batch of messages that did
	// not reach Redis in Async mode, with their count and the error. It runs
	// on the goroutine that sends to Redis, so it must not block.
	OnAsyncError func(topic string, messages int, err error)

	// CloseTimeout bounds how long Close waits for publishes that Redis has
	// not answered yet (without Async; in Async mode AsyncCloseTimeout
	// bounds all of Close). Those still unanswered then fail with an error
	// saying their fate is unknown. Zero means 5 seconds.
	CloseTimeout time.Duration
}

func (c *PublisherConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = EnvelopeMarshaler{}
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = 512
	}
	if c.AsyncQueueSize == 0 {
		c.AsyncQueueSize = 10_000
	}
	if c.AsyncCloseTimeout == 0 {
		c.AsyncCloseTimeout = 5 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
}

// Validate reports the first invalid field, if any.
func (c PublisherConfig) Validate() error {
	switch {
	case c.Client == nil:
		return configError("PublisherConfig.Client", "is required")
	case c.MaxBatchSize < 0:
		return configError("PublisherConfig.MaxBatchSize", "must not be negative")
	case c.AsyncQueueSize < 0:
		return configError("PublisherConfig.AsyncQueueSize", "must not be negative")
	case c.AsyncCloseTimeout < 0:
		return configError("PublisherConfig.AsyncCloseTimeout", "must not be negative")
	case c.CloseTimeout < 0:
		return configError("PublisherConfig.CloseTimeout", "must not be negative")
	}
	return nil
}

// Publisher is a best-effort Watermill Publisher over Redis PUBLISH: every
// Subscriber connected to the topic at that moment receives the message; one
// that is not connected never will. For at-least-once delivery use the
// [StreamsPublisher].
//
// Concurrent Publish calls are coalesced: the calls waiting when a pipeline
// is free go to Redis together, up to [PublisherConfig.MaxBatchSize]
// commands, so many goroutines publishing one message each share round
// trips, while a lone call is sent at once (nothing waits for a batch to
// fill). With [PublisherConfig.Async], Publish does not wait at all.
type Publisher struct {
	config    PublisherConfig
	logger    watermill.LoggerAdapter
	coalescer *coalescer

	// mu is held for reading by every publish in progress, so Close waits
	// for them and nothing is sent after Close returns, and for writing by
	// Flush.
	mu sync.RWMutex
	// closing is cancelled when Close starts: publishes and Flush waiting
	// for the queue stop waiting.
	closing     context.Context
	stopClosing context.CancelCauseFunc
	closeOnce   sync.Once
	closed      chan struct{} // closed when Close has finished
	closeErr    error

	queued      pendingCounter // messages queued in Async mode, not yet finished
	asyncFailed atomic.Uint64
}

// PublisherStats are counters since the Publisher was created.
type PublisherStats struct {
	// AsyncFailed counts the messages Publish accepted in Async mode that
	// did not reach Redis.
	AsyncFailed uint64
}

// Stats returns the Publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{AsyncFailed: p.asyncFailed.Load()}
}

// NewPublisher creates a Publisher. A nil logger means no logging.
func NewPublisher(config PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	queue := config.MaxBatchSize
	if config.Async {
		queue = config.AsyncQueueSize
	}
	c := newCoalescer(config.Client, config.MaxBatchSize, queue, config.Async)
	if cluster, ok := config.Client.(*redis.ClusterClient); ok && !config.Sharded {
		c.route = clusterPublishRoute(cluster)
	}
	p := &Publisher{config: config, logger: logger, coalescer: c, closed: make(chan struct{})}
	p.closing, p.stopClosing = context.WithCancelCause(context.Background())
	return p, nil
}

// clusterPublishRoute sends plain PUBLISHes on a Redis Cluster through one
// master. A PUBLISH names no key, so go-redis sends each to a random node;
// every node forwards it to the whole cluster, but messages entering at
// different nodes lose their order on the way, which Watermill's ordering
// tests caught. Through one node they keep it, and cost the cluster the same:
// each node delivers every message anyway. The master is looked up for
// every pipeline, so a failover moves the route with the slot map.
func clusterPublishRoute(cluster *redis.ClusterClient) func(ctx context.Context) (*redis.Client, error) {
	return func(ctx context.Context) (*redis.Client, error) {
		return cluster.MasterForKey(ctx, "{redisbus}")
	}
}

// Publish sends msgs to topic in one pipelined round trip, shared with
// concurrent calls. It returns once Redis has accepted all of them, or with
// the first error. The round trip is abandoned when any message's context is
// done.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	ctx, release := messagesContext(msgs)
	defer release()
	_, err := p.publish(ctx, topic, msgs, !p.config.Async)
	return err
}

// PublishCount publishes msg to topic and returns how many subscribed
// connections Redis delivered it to: zero means nobody was listening. Each
// Subscriber holds one connection per topic (in Sharded mode) or one for all
// its topics, however many Subscribe calls share it. On a Redis Cluster the
// count covers one node: the shard that owns the channel in Sharded mode,
// otherwise the master that every plain PUBLISH of the Publisher goes
// through (the one owning the slot of "{redisbus}"; one entry node keeps
// messages in order, which PUBLISHes entering at random nodes would lose).
func (p *Publisher) PublishCount(ctx context.Context, topic string, msg *message.Message) (int64, error) {
	return p.publish(ctx, topic, []*message.Message{msg}, true)
}

// publish sends msgs and, if wait, returns how many deliveries Redis
// reported for all of them together; otherwise it returns once they are
// queued.
func (p *Publisher) publish(ctx context.Context, topic string, msgs []*message.Message, wait bool) (int64, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closing.Err() != nil {
		return 0, ErrPublisherClosed
	}

	call := &publishCall{publisher: p, ctx: ctx, topic: topic}
	call.payloads, call.cmds = call.one[:0], call.oneCmd[:]
	if len(msgs) > 1 {
		call.payloads, call.cmds = make([][]byte, 0, len(msgs)), make([]*redis.IntCmd, len(msgs))
	}
	for _, msg := range msgs {
		data, err := p.config.Marshaler.Marshal(topic, msg)
		if err != nil {
			return 0, fmt.Errorf("redisbus: marshal message %s: %w", msg.UUID, err)
		}
		call.payloads = append(call.payloads, data)
	}

	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("redisbus: publish to %q: %w", topic, context.Cause(ctx))
	}
	if !wait {
		// The message's context bounds the wait for room in the queue only:
		// the caller's request may end before the message is sent.
		call.ctx = context.WithoutCancel(ctx)
		p.queued.add(len(msgs))
		if err := p.coalescer.submit(ctx, len(msgs), call); err != nil {
			p.queued.done(len(msgs))
			if errors.Is(err, ErrPublisherClosed) {
				return 0, err
			}
			return 0, fmt.Errorf("redisbus: publish to %q: queue full: %w", topic, err)
		}
		return 0, nil
	}
	if err := p.coalescer.do(ctx, len(msgs), call); err != nil {
		return 0, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
	}
	if err := call.firstError(); err != nil {
		return 0, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
	}
	var receivers int64
	for _, cmd := range call.cmds {
		receivers += cmd.Val()
	}
	return receivers, nil
}

// publishCall is one publish's commands on their way through the
// coalescer. Most calls publish one message, which one and oneCmd hold
// without allocating slices.
type publishCall struct {
	publisher *Publisher
	ctx       context.Context
	topic     string
	payloads  [][]byte
	cmds      []*redis.IntCmd
	one       [1][]byte
	oneCmd    [1]*redis.IntCmd
}

// finished reports an asynchronous call's failure, if any.
func (c *publishCall) finished(sent bool, err error) {
	p := c.publisher
	switch {
	case err != nil:
	case !sent:
		err = errUnsentAtClose
	default:
		err = c.firstError()
	}
	if err != nil {
		p.asyncFailed.Add(uint64(len(c.payloads)))
		p.logger.Error("Async publish failed", err, watermill.LogFields{"topic": c.topic, "messages": len(c.payloads)})
		if p.config.OnAsyncError != nil {
			p.config.OnAsyncError(c.topic, len(c.payloads), err)
		}
	}
	p.queued.done(len(c.payloads))
}

// firstError is the first error among the call's commands, once sent.
func (c *publishCall) firstError() error {
	for _, cmd := range c.cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

var errUnsentAtClose = fmt.Errorf("%w before the message was sent", ErrPublisherClosed)

// addTo adds a PUBLISH (or SPUBLISH) per message, each sent at most once:
// see coalescer.send.
func (c *publishCall) addTo(pipe redis.Pipeliner) {
	name := "publish"
	if c.publisher.config.Sharded {
		name = "spublish"
	}
	for i, data := range c.payloads {
		c.cmds[i] = redis.NewIntCmd(c.ctx, name, c.topic, data)
		_ = pipe.Process(c.ctx, sendonce.IntCmd{IntCmd: c.cmds[i]})
	}
}

// Flush waits until every message queued in Async mode has reached Redis
// or failed, or until ctx is done or Close starts. Publish calls wait while
// Flush runs. Without Async there is nothing to wait for.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(p.closing, func() { cancel(ErrPublisherClosed) })
	defer stop()
	return p.queued.wait(ctx)
}

// String names the publisher in logs and metrics: Watermill's
// components/metrics labels its series with it (publisher_name), so it
// says what kind of publisher this is and nothing that varies per process.
func (p *Publisher) String() string {
	switch {
	case p.config.Sharded && p.config.Async:
		return "redisbus.Publisher(sharded,async)"
	case p.config.Sharded:
		return "redisbus.Publisher(sharded)"
	case p.config.Async:
		return "redisbus.Publisher(async)"
	}
	return "redisbus.Publisher"
}

// Close stops the Publisher and returns within its bound, whatever Redis
// does: AsyncCloseTimeout in Async mode, CloseTimeout otherwise. Later
// publishes fail with ErrPublisherClosed, and so do those waiting for room
// in the queue. In Async mode it first sends what is queued. A publish that
// Redis has not answered by the bound fails with an error saying it may or
// may not have been published, and an asynchronous one counts as failed;
// Close returns an error counting the messages it could not confirm. The
// goroutine waiting on such a round trip exits when the client's
// ReadTimeout ends it. Close does not close the client. It is idempotent:
// a second call waits for the first.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		defer close(p.closed)
		bound := p.config.CloseTimeout
		if p.config.Async {
			bound = p.config.AsyncCloseTimeout
		}
		deadline := time.Now().Add(bound)
		failedBefore := p.asyncFailed.Load()
		p.stopClosing(ErrPublisherClosed)
		p.coalescer.beginClose()
		if p.config.Async {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			_ = p.queued.wait(ctx)
			cancel()
		}
		p.coalescer.close(deadline)
		p.mu.Lock() // every publish has returned
		p.coalescer.drain()
		p.mu.Unlock()
		failed := p.asyncFailed.Load() - failedBefore
		if !p.config.Async {
			if n := p.coalescer.abandoned.Load(); n > 0 {
				p.closeErr = fmt.Errorf("redisbus: Close gave up on %d publishes Redis had not answered (they may or may not have been published)", n)
			}
		} else if unknown := p.queued.count(); failed > 0 || unknown > 0 {
			p.closeErr = fmt.Errorf("redisbus: Close gave up on %d queued messages: %d did not reach Redis, %d were not confirmed by it (they may or may not have been published)",
				uint64(unknown)+failed, failed, unknown)
		}
	})
	<-p.closed
	return p.closeErr
}

// messagesContext returns a context that is done as soon as any message's
// context is done, so one round trip can honour every message's deadline.
func messagesContext(msgs []*message.Message) (context.Context, func()) {
	if len(msgs) == 1 {
		return msgs[0].Context(), func() {}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	var stops []func() bool
	var seen []<-chan struct{}
	for _, msg := range msgs {
		mctx := msg.Context()
		done := mctx.Done()
		if done == nil || slices.Contains(seen, done) {
			continue
		}
		if mctx.Err() != nil {
			// AfterFunc would cancel from another goroutine, later: a
			// message whose context is done already must stop the call now.
			cancel(context.Cause(mctx))
			break
		}
		seen = append(seen, done)
		stops = append(stops, context.AfterFunc(mctx, func() { cancel(context.Cause(mctx)) }))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(nil)
	}
}
