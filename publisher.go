package redisbus

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
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
}

func (c *PublisherConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = EnvelopeMarshaler{}
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = 512
	}
}

// Validate reports the first invalid field, if any.
func (c PublisherConfig) Validate() error {
	switch {
	case c.Client == nil:
		return configError("PublisherConfig.Client", "is required")
	case c.MaxBatchSize < 0:
		return configError("PublisherConfig.MaxBatchSize", "must not be negative")
	}
	return nil
}

// Publisher is a best-effort Watermill Publisher over Redis PUBLISH: every
// Subscriber connected to the topic at that moment receives the message; one
// that is not connected never will. For at-least-once delivery use the
// Streams publisher.
//
// Concurrent Publish calls are coalesced (see coalescer): many goroutines
// publishing one message each share round trips, while a lone call is sent
// at once.
type Publisher struct {
	config    PublisherConfig
	logger    watermill.LoggerAdapter
	coalescer *coalescer

	// mu is held for reading by every publish in progress, so Close waits
	// for them and nothing is sent after Close returns.
	mu     sync.RWMutex
	closed bool
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
	return &Publisher{config: config, logger: logger, coalescer: newCoalescer(config.Client, config.MaxBatchSize)}, nil
}

// Publish sends msgs to topic in one pipelined round trip, shared with
// concurrent calls. It returns once Redis has accepted all of them, or with
// the first error. The round trip is abandoned when any message's context is
// done.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	ctx, release := messagesContext(msgs)
	defer release()
	_, err := p.publish(ctx, topic, msgs)
	return err
}

// PublishCount publishes msg to topic and returns how many subscribed
// connections Redis delivered it to: zero means nobody was listening. Each
// Subscriber holds one connection per topic (in Sharded mode) or one for all
// its topics, however many Subscribe calls share it. In Sharded mode on a
// cluster the count covers only the shard that owns the channel.
func (p *Publisher) PublishCount(ctx context.Context, topic string, msg *message.Message) (int64, error) {
	return p.publish(ctx, topic, []*message.Message{msg})
}

// publish sends msgs and returns how many deliveries Redis reported for
// all of them together.
func (p *Publisher) publish(ctx context.Context, topic string, msgs []*message.Message) (int64, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
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
	if err := p.coalescer.do(ctx, len(msgs), call); err != nil {
		return 0, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
	}
	var receivers int64
	for _, cmd := range call.cmds {
		if err := cmd.Err(); err != nil {
			return 0, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
		}
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

func (c *publishCall) addTo(pipe redis.Pipeliner) {
	for i, data := range c.payloads {
		if c.publisher.config.Sharded {
			c.cmds[i] = pipe.SPublish(c.ctx, c.topic, data)
		} else {
			c.cmds[i] = pipe.Publish(c.ctx, c.topic, data)
		}
	}
}

// Close stops the Publisher: it waits for publishes in progress and makes
// later ones fail with ErrPublisherClosed. It does not close the client.
// Close is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.coalescer.close()
	}
	return nil
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
