package redisbus

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// StreamTrim bounds a stream. The zero StreamTrim means the defaults:
// MaxLen 1,000,000 and MaxAge 7 days. In a non-zero StreamTrim a zero field
// means no bound of that kind.
//
// Trimming removes entries whether or not every consumer group has read
// them: size the bounds above the largest backlog you expect.
type StreamTrim struct {
	// MaxLen trims the stream to about this many entries on every XADD
	// (MAXLEN ~, which trims whole macro nodes and is cheap).
	MaxLen int64
	// MaxAge trims entries older than this (XTRIM MINID ~), at most once a
	// second per topic.
	MaxAge time.Duration
	// Unbounded turns trimming off for the stream.
	Unbounded bool
}

var defaultStreamTrim = StreamTrim{MaxLen: 1_000_000, MaxAge: 7 * 24 * time.Hour}

func (t StreamTrim) orDefault() StreamTrim {
	if t == (StreamTrim{}) {
		return defaultStreamTrim
	}
	return t
}

// StreamsPublisherConfig configures a StreamsPublisher.
type StreamsPublisherConfig struct {
	// Client runs the XADDs. Required; never closed by the publisher.
	Client redis.UniversalClient

	// Marshaler encodes messages as entry fields. Nil means
	// DefaultStreamsMarshaler.
	Marshaler StreamsMarshaler

	// Trim bounds every stream the publisher writes to, unless TopicTrim
	// names the topic. See StreamTrim for the defaults.
	Trim StreamTrim
	// TopicTrim overrides Trim per topic.
	TopicTrim map[string]StreamTrim

	// MaxBatchSize bounds how many XADDs go in one pipeline when concurrent
	// Publish calls are coalesced. Zero means 512.
	MaxBatchSize int
}

func (c *StreamsPublisherConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = DefaultStreamsMarshaler{}
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = 512
	}
}

// Validate reports the first invalid field, if any.
func (c StreamsPublisherConfig) Validate() error {
	switch {
	case c.Client == nil:
		return configError("StreamsPublisherConfig.Client", "is required")
	case c.MaxBatchSize < 0:
		return configError("StreamsPublisherConfig.MaxBatchSize", "must not be negative")
	}
	for topic, trim := range c.TopicTrim {
		if err := trim.validate(fmt.Sprintf("StreamsPublisherConfig.TopicTrim[%q]", topic)); err != nil {
			return err
		}
	}
	return c.Trim.validate("StreamsPublisherConfig.Trim")
}

func (t StreamTrim) validate(field string) error {
	switch {
	case t.MaxLen < 0:
		return configError(field+".MaxLen", "must not be negative")
	case t.MaxAge < 0:
		return configError(field+".MaxAge", "must not be negative")
	}
	return nil
}

// StreamsPublisher is an at-least-once Watermill Publisher over Redis
// Streams (XADD). Publish returns once Redis has stored every message; with
// AOF and appendfsync always, a message acknowledged to the publisher
// survives a Redis crash.
//
// Concurrent Publish calls are coalesced (see coalescer): many goroutines
// publishing one message each share round trips, while a lone call is sent
// at once.
type StreamsPublisher struct {
	config    StreamsPublisherConfig
	logger    watermill.LoggerAdapter
	coalescer *coalescer

	// mu is held for reading by every publish in progress, so Close waits
	// for them and nothing is sent after Close returns.
	mu     sync.RWMutex
	closed bool

	trimMu      sync.Mutex
	lastAgeTrim map[string]time.Time
}

// NewStreamsPublisher creates a StreamsPublisher. A nil logger means no
// logging.
func NewStreamsPublisher(config StreamsPublisherConfig, logger watermill.LoggerAdapter) (*StreamsPublisher, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &StreamsPublisher{
		config:      config,
		logger:      logger,
		coalescer:   newCoalescer(config.Client, config.MaxBatchSize, config.MaxBatchSize, false),
		lastAgeTrim: map[string]time.Time{},
	}
	return p, nil
}

// Publish appends msgs to the topic's stream and returns once Redis has
// stored all of them. The messages of one call go in one pipeline, in
// order. It fails when any message's context is done first.
func (p *StreamsPublisher) Publish(topic string, msgs ...*message.Message) error {
	ctx, release := messagesContext(msgs)
	defer release()
	_, err := p.publish(ctx, topic, msgs)
	return err
}

// PublishIDs is Publish with a context, returning the stream entry ID Redis
// gave each message (e.g. "1779520329297-0").
func (p *StreamsPublisher) PublishIDs(ctx context.Context, topic string, msgs ...*message.Message) ([]string, error) {
	call, err := p.publish(ctx, topic, msgs)
	if call == nil || err != nil {
		return nil, err
	}
	ids := make([]string, len(call.cmds))
	for i, cmd := range call.cmds {
		ids[i] = cmd.Val()
	}
	return ids, nil
}

// publish appends msgs and returns their commands, all successful.
func (p *StreamsPublisher) publish(ctx context.Context, topic string, msgs []*message.Message) (*xaddCall, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, ErrPublisherClosed
	}

	call := &xaddCall{ctx: ctx, args: redis.XAddArgs{Stream: topic}}
	call.fields, call.cmds = call.one[:0], call.oneCmd[:]
	if len(msgs) > 1 {
		call.fields, call.cmds = make([][]any, 0, len(msgs)), make([]*redis.StringCmd, len(msgs))
	}
	for _, msg := range msgs {
		f, err := p.config.Marshaler.Marshal(topic, msg)
		if err != nil {
			return nil, fmt.Errorf("redisbus: marshal message %s: %w", msg.UUID, err)
		}
		call.fields = append(call.fields, f)
	}
	trim := p.trimFor(topic)
	if !trim.Unbounded && trim.MaxLen > 0 {
		call.args.MaxLen, call.args.Approx = trim.MaxLen, true
	}
	if p.ageTrimDue(topic, trim) {
		call.trimMinID = strconv.FormatInt(time.Now().Add(-trim.MaxAge).UnixMilli(), 10)
	}

	if err := p.coalescer.do(ctx, len(msgs), call); err != nil {
		// The entries may still be written: at-least-once.
		return nil, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
	}
	for _, cmd := range call.cmds {
		if err := cmd.Err(); err != nil {
			return nil, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
		}
	}
	return call, nil
}

// xaddCall is one publish's commands on their way through the coalescer.
// Most calls publish one message, which one and oneCmd hold without
// allocating slices.
type xaddCall struct {
	ctx       context.Context
	args      redis.XAddArgs // all but Values, shared by the call's entries
	fields    [][]any
	trimMinID string // when not empty, an XTRIM MINID ~ follows the entries
	cmds      []*redis.StringCmd
	one       [1][]any
	oneCmd    [1]*redis.StringCmd
}

func (c *xaddCall) addTo(pipe redis.Pipeliner) {
	for i, f := range c.fields {
		args := c.args
		args.Values = f
		c.cmds[i] = pipe.XAdd(c.ctx, &args)
	}
	if c.trimMinID != "" {
		pipe.XTrimMinIDApprox(c.ctx, c.args.Stream, c.trimMinID, 0)
	}
}

func (p *StreamsPublisher) trimFor(topic string) StreamTrim {
	if trim, ok := p.config.TopicTrim[topic]; ok {
		return trim.orDefault()
	}
	return p.config.Trim.orDefault()
}

// ageTrimDue reports whether the topic's age trim should run now: at most
// once a second, since XTRIM MINID walks the stream's radix tree.
func (p *StreamsPublisher) ageTrimDue(topic string, trim StreamTrim) bool {
	if trim.Unbounded || trim.MaxAge == 0 {
		return false
	}
	p.trimMu.Lock()
	defer p.trimMu.Unlock()
	now := time.Now()
	if now.Sub(p.lastAgeTrim[topic]) < time.Second {
		return false
	}
	p.lastAgeTrim[topic] = now
	return true
}

// Close waits for publishes in progress and stops the publisher; later
// Publish calls fail with ErrPublisherClosed. It does not close the client
// and is idempotent.
func (p *StreamsPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.coalescer.close()
	}
	return nil
}
