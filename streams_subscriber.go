package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Metadata keys the StreamsSubscriber sets on every message it delivers.
const (
	// MetadataStreamID is the entry's stream ID, e.g. "1779520329297-0".
	MetadataStreamID = "redisbus_stream_id"
	// MetadataDeliveryCount is how many times the entry has been delivered,
	// this delivery included, as the consumer group counts them: "1" the
	// first time, more after a Nack or after a crashed consumer's entry was
	// claimed.
	MetadataDeliveryCount = "redisbus_delivery_count"
)

// StreamsSubscriberConfig configures a StreamsSubscriber. The zero value of
// every field but Client means its documented default.
type StreamsSubscriberConfig struct {
	// Client runs the consumer group commands. Required; never closed by
	// the subscriber. Its hooks (redisotel and the like) see every command
	// the subscriber sends, those of the client it makes from this one (see
	// ReadClient) too, provided they were added before the first
	// subscriber was made on it: the subscriber adds a hook of its own,
	// once per client, that relays those commands through the ones before.
	Client redis.UniversalClient

	// ReadClient runs the commands that move entries to this consumer:
	// blocking reads and claims. Nil means a client the subscriber makes
	// from Client's options (a *redis.Client or *redis.ClusterClient; any
	// other Client is used itself); Close ends a consumer group's waiting
	// read with CLIENT UNBLOCK, so that it returns what it got, and then
	// closes that client. With a ReadClient of yours, Close waits for a
	// read to end (at most BlockTime). It should not retry commands (MaxRetries -1):
	// a read retried after a lost reply leaves entries pending unseen until
	// ClaimMinIdle.
	ReadClient redis.UniversalClient

	// Marshaler decodes entries. Nil means DefaultStreamsMarshaler.
	Marshaler StreamsMarshaler

	// ConsumerGroup shares a topic's entries among the subscribers of the
	// group: each entry goes to one of them, and is redelivered until
	// acked. Empty means fan-out: every subscriber reads every entry (XREAD),
	// keeping its position in memory only, and Ack and Nack stay local.
	ConsumerGroup string

	// Consumer names this subscriber within the group. Keep it stable
	// across restarts (a StatefulSet ordinal, say, not a random pod name),
	// so that a restarted process takes up its own pending entries at once.
	//
	// A name is leased to one live subscriber per stream and group (a key
	// in Redis, renewed while it runs, see ConsumerLease): two processes
	// never share one, which would make each take the other's entries. The
	// default is the host name; when a live subscriber holds it, the next
	// of name-2, name-3 … that is free. An explicit name that a live
	// subscriber holds makes Subscribe fail; one left by a process that
	// stopped without Close is taken once its lease lapses.
	Consumer string

	// ConsumerLease is how long a consumer name stays leased after its
	// subscriber stopped renewing it: how long a process restarted after a
	// crash waits for its explicit Consumer name. Zero means 10s.
	ConsumerLease time.Duration

	// StartID is where a new consumer group, or a fan-out subscription,
	// starts: "0" for the beginning of the stream, "$" for new entries only,
	// or an entry ID. The default is "0" for a group (nothing published
	// before the first consumer started is lost) and "$" for fan-out.
	StartID string

	// ClaimMinIdle is how long an entry must sit unacked with a consumer
	// before another consumer may take it over (XAUTOCLAIM): the time after
	// which a dead consumer's entries are redelivered. A live subscriber
	// renews the entries it holds every ClaimMinIdle/3, so handlers that run
	// longer than ClaimMinIdle keep their entries. Zero means 30s.
	ClaimMinIdle time.Duration

	// ClaimInterval is how often the subscriber looks for entries to take
	// over, when it has a free handler: entries of consumers that died, and
	// entries other subscribers handed back. Zero means ClaimMinIdle/30,
	// between 10ms and 5s (1s with the default ClaimMinIdle).
	ClaimInterval time.Duration

	// MaxDeliveries is how many times an entry may reach a handler without
	// being acked (Nacks, and handlers that died with their process) before
	// it is moved to the dead-letter stream. Only deliveries to a handler
	// count, never reads: an entry that changed hands (a consumer crashed,
	// restarted or handed it back) may get one delivery more, never fewer.
	// Zero means 10; negative means never.
	MaxDeliveries int

	// DeadLetterTopic names the dead-letter stream of a topic. Nil means
	// topic + ":dead". Subscribe refuses a topic it names as its own dead
	// letters' stream, or gives "" for.
	DeadLetterTopic func(topic string) string

	// Prefetch bounds how many entries per topic wait in this process
	// beyond those its handlers hold (see ReadAhead). Zero means 1024.
	Prefetch int

	// ReadAhead sizes what each topic reads ahead of its handlers, in
	// handler time: about as many entries as the handlers are expected to
	// start within ReadAhead, judged by how long they have been taking, at
	// most Prefetch. Fast handlers get large batches; slow ones leave the
	// entries in Redis, where the other consumers of the group take them.
	// Until a handler has finished once, nothing is read ahead. Zero means
	// 20ms; negative means never read ahead (read only what a free handler
	// starts at once).
	ReadAhead time.Duration

	// ReadBatchSize is the most entries one read asks for. Zero means 256
	// (never more than Prefetch).
	ReadBatchSize int

	// MaxInFlight is how many unacked messages each Subscribe channel may
	// hold. The default, 1, delivers in order: the next message comes after
	// the previous one was acked or nacked. More lets a Router handle
	// messages concurrently, and gives up order.
	MaxInFlight int

	// NackResendDelay is how long a nacked entry waits before it is
	// delivered again; it doubles with every further delivery up to
	// NackMaxDelay. Zero means 100ms; negative means at once.
	NackResendDelay time.Duration
	// NackMaxDelay caps the backoff. Zero means 10s.
	NackMaxDelay time.Duration

	// AckFlushInterval is how long acks may wait to be sent together in one
	// pipeline. Zero means 2ms.
	AckFlushInterval time.Duration

	// BlockTime is how long one read waits for new entries. Close interrupts
	// a waiting read, so this matters little. Zero means 2s.
	BlockTime time.Duration

	// CloseTimeout is how long Close waits for messages already handed out
	// to be acked or nacked before it hands them back to the group: a
	// Router closes its subscribers while its handlers finish, and their
	// acks should count rather than the messages come again. Close returns
	// as soon as none is left, and within CloseTimeout + 1s whatever Redis
	// does (see Close). Zero means 5s; negative means not at all.
	CloseTimeout time.Duration

	// ConsumerIdleTimeout removes consumers of the group that have nothing
	// pending and have been idle this long. Zero means 1h; negative means
	// never.
	ConsumerIdleTimeout time.Duration

	// DelayedMoveBatch is the most delayed messages (Watermill's delay
	// metadata, see StreamsPublisher) one round trip moves into a topic's
	// stream once they are due; more due at once take more round trips,
	// back to back. Every subscriber of a topic moves them, each message
	// exactly once. Zero means 100.
	DelayedMoveBatch int

	// DelayedPollInterval is the longest a topic's mover sleeps: it wakes
	// when the next delayed message is due, and when a publisher schedules
	// one due sooner (a Pub/Sub message), and looks at least this often in
	// case such a message was lost. Zero means 1s.
	DelayedPollInterval time.Duration
}

func (c *StreamsSubscriberConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = DefaultStreamsMarshaler{}
	}
	if c.StartID == "" {
		c.StartID = "0"
		if c.ConsumerGroup == "" {
			c.StartID = "$"
		}
	}
	if c.ClaimMinIdle == 0 {
		c.ClaimMinIdle = 30 * time.Second
	}
	if c.ClaimInterval == 0 {
		c.ClaimInterval = min(max(c.ClaimMinIdle/30, 10*time.Millisecond), 5*time.Second)
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = 10
	}
	if c.DeadLetterTopic == nil {
		c.DeadLetterTopic = func(topic string) string { return topic + ":dead" }
	}
	if c.Prefetch == 0 {
		c.Prefetch = 1024
	}
	if c.ReadAhead == 0 {
		c.ReadAhead = 20 * time.Millisecond
	}
	if c.ConsumerLease == 0 {
		c.ConsumerLease = 10 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.ReadBatchSize == 0 {
		c.ReadBatchSize = min(256, c.Prefetch)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1
	}
	if c.NackResendDelay == 0 {
		c.NackResendDelay = 100 * time.Millisecond
	}
	if c.NackMaxDelay == 0 {
		c.NackMaxDelay = 10 * time.Second
	}
	if c.AckFlushInterval == 0 {
		c.AckFlushInterval = 2 * time.Millisecond
	}
	if c.BlockTime == 0 {
		c.BlockTime = 2 * time.Second
	}
	if c.ConsumerIdleTimeout == 0 {
		c.ConsumerIdleTimeout = time.Hour
	}
	if c.DelayedMoveBatch == 0 {
		c.DelayedMoveBatch = 100
	}
	if c.DelayedPollInterval == 0 {
		c.DelayedPollInterval = time.Second
	}
}

// Validate reports the first invalid field, if any.
func (c StreamsSubscriberConfig) Validate() error {
	field := func(name string) string { return "StreamsSubscriberConfig." + name }
	switch {
	case c.Client == nil:
		return configError(field("Client"), "is required")
	case c.ClaimMinIdle < 10*time.Millisecond:
		return configError(field("ClaimMinIdle"), "must be at least 10ms: entries are renewed every third of it")
	case c.ClaimInterval < 0:
		return configError(field("ClaimInterval"), "must not be negative")
	case c.Prefetch < 0:
		return configError(field("Prefetch"), "must not be negative")
	case c.ReadBatchSize < 0:
		return configError(field("ReadBatchSize"), "must not be negative")
	case c.ReadBatchSize > c.Prefetch && c.Prefetch > 0:
		return configError(field("ReadBatchSize"), fmt.Sprintf("must not exceed Prefetch (%d)", c.Prefetch))
	case c.MaxInFlight < 0:
		return configError(field("MaxInFlight"), "must not be negative")
	case c.NackMaxDelay < 0:
		return configError(field("NackMaxDelay"), "must not be negative")
	case c.AckFlushInterval < 0:
		return configError(field("AckFlushInterval"), "must not be negative")
	case c.BlockTime < time.Millisecond:
		return configError(field("BlockTime"), "must be at least 1ms (Redis counts it in milliseconds; 0 would block for ever)")
	case c.NackResendDelay > 0 && c.NackMaxDelay < c.NackResendDelay:
		return configError(field("NackMaxDelay"), fmt.Sprintf("must not be below NackResendDelay (%s)", c.NackResendDelay))
	case !validStartID(c.StartID):
		return configError(field("StartID"), fmt.Sprintf("%q is not \"0\", \"$\" or a stream entry ID such as \"1700000000000-0\"", c.StartID))
	case c.ConsumerLease < 0:
		return configError(field("ConsumerLease"), "must not be negative")
	case c.ConsumerLease > 0 && c.ConsumerLease < 10*time.Millisecond:
		return configError(field("ConsumerLease"), "must be at least 10ms")
	case c.DelayedMoveBatch < 0:
		return configError(field("DelayedMoveBatch"), "must not be negative")
	case c.DelayedMoveBatch > maxScheduleBatch:
		return configError(field("DelayedMoveBatch"), fmt.Sprintf("must be at most %d: one script holds Redis for all of them", maxScheduleBatch))
	case c.DelayedPollInterval < 0:
		return configError(field("DelayedPollInterval"), "must not be negative")
	case c.DelayedPollInterval > 0 && c.DelayedPollInterval < time.Millisecond:
		return configError(field("DelayedPollInterval"), "must be at least 1ms")
	}
	return nil
}

// validStartID reports whether id is "$" or a stream entry ID, "<ms>" or
// "<ms>-<seq>" in decimal.
func validStartID(id string) bool {
	if id == "$" {
		return true
	}
	ms, seq, hasSeq := strings.Cut(id, "-")
	digits := func(s string) bool {
		if s == "" || len(s) > 20 {
			return false
		}
		for _, c := range s {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	}
	return digits(ms) && (!hasSeq || digits(seq))
}

// StreamsSubscriberStats are counters since the subscriber was created.
type StreamsSubscriberStats struct {
	Read         uint64 // entries read from streams: new ones, own pending ones resumed, and claimed ones
	Claimed      uint64 // entries taken over from other consumers
	Delivered    uint64 // messages handed to Subscribe channels, redeliveries included
	Acked        uint64
	Nacked       uint64
	DeadLettered uint64 // entries moved to a dead-letter stream (stored there, then acked)
	// DeadLetterFailures counts attempts to move an entry to a dead-letter
	// stream that Redis refused (full, or the key is not a stream). The
	// entry stays pending with this consumer and is tried again.
	DeadLetterFailures uint64
	Lost               uint64 // held entries that another consumer claimed meanwhile
	// Released counts entries handed back to the group unhandled: a
	// topic's last Subscribe ended, Close, or entries read ahead that slow
	// handlers (or a long nack backoff) would not start soon.
	Released uint64
	// Trimmed counts pending entries whose stream entry was trimmed or
	// deleted before they were handled: nothing is left to deliver.
	Trimmed uint64
	Held    int // entries in memory now, read and not yet acked in Redis
	// DelayedMoved counts the delayed messages this subscriber moved into
	// their streams once due; MaxDelayedLateness is the latest any of
	// them was moved after its due time (by Redis' clock).
	DelayedMoved       uint64
	MaxDelayedLateness time.Duration
	// Rescheduled counts nacked messages whose handler asked for a later
	// delivery (a delay in their metadata, e.g. middleware.DelayOnError):
	// stored as delayed messages, and their entries acked.
	Rescheduled uint64
}

type streamsCounters struct {
	read, claimed, delivered, acked, nacked, deadLettered, deadLetterFailures, lost, released, trimmed atomic.Uint64
	delayedMoved, rescheduled                                                                          atomic.Uint64
	maxLateness                                                                                        atomic.Int64 // ns
}

// StreamsSubscriber is an at-least-once Watermill Subscriber over Redis
// Streams with consumer groups: Ack is XACK, Nack redelivers the entry with
// backoff, entries of dead consumers are claimed, and entries that cannot
// be decoded or keep failing go to a dead-letter stream.
//
// Each topic is read once per subscriber, however many Subscribe calls share
// it; entries are read into a per-topic inbox, as many as the handlers will
// start soon (see [StreamsSubscriberConfig.ReadAhead]), and shared among the
// topic's Subscribe channels as the [Subscriber] shares messages, each
// channel holding up to [StreamsSubscriberConfig.MaxInFlight] unacked
// messages. Entries not read ahead stay in Redis, where the other consumers
// of the group can take them.
type StreamsSubscriber struct {
	config StreamsSubscriberConfig
	logger watermill.LoggerAdapter
	stats  streamsCounters
	// explicitName says the Consumer name was configured, not defaulted.
	explicitName bool

	// blocking runs the commands that move entries to this consumer:
	// blocking reads, claims and takes (see reader). Owned (and closed) by
	// the subscriber unless it is config.ReadClient or config.Client itself.
	blockingMu     sync.Mutex
	blocking       redis.UniversalClient
	ownBlocking    bool
	blockingClosed bool
	// rtt estimates a round trip to Redis, in nanoseconds (see
	// observeRoundTrip).
	rtt   atomic.Int64
	acker *streamsAcker
	wakes delayedWakes

	mu      sync.Mutex
	closed  bool
	topics  map[string]*streamsTopic
	closing chan struct{}
	wg      sync.WaitGroup
	// closeDone is closed when Close has finished: every concurrent Close
	// returns only then.
	closeDone chan struct{}
}

// NewStreamsSubscriber creates a StreamsSubscriber. A nil logger means no
// logging.
func NewStreamsSubscriber(config StreamsSubscriberConfig, logger watermill.LoggerAdapter) (*StreamsSubscriber, error) {
	explicitName := config.Consumer != ""
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	if !explicitName {
		config.Consumer = defaultConsumerName()
	}

	s := &StreamsSubscriber{
		config:       config,
		explicitName: explicitName,
		logger:       logger.With(watermill.LogFields{"consumer_group": config.ConsumerGroup}),
		topics:       map[string]*streamsTopic{},
		closing:      make(chan struct{}),
		closeDone:    make(chan struct{}),
	}
	s.blocking = config.ReadClient
	if s.blocking == nil {
		s.blocking, s.ownBlocking = blockingClient(config.Client)
	}
	if w := newPrimaryWatch(config.Client); w != nil && s.ownBlocking {
		s.wg.Go(func() { w.run(s.closing, primaryCheckInterval, s.primaryMoved) })
	}
	s.acker = newStreamsAcker(s)
	return s, nil
}

// blockingClient makes a client with the options of c for the commands that
// move entries into this consumer's pending list: blocking reads, claims
// and takes.
//
// It never retries by itself. A read whose reply is lost to a broken
// connection has still moved its entries to the pending list, and a take
// has counted a delivery; a silent retry would read the next entries, or
// count again. Seeing the error, the reader resumes its pending list
// instead.
func blockingClient(c redis.UniversalClient) (redis.UniversalClient, bool) {
	// Each topic's reader holds a connection while it waits; connections
	// are opened on demand, so a large pool costs nothing up front.
	const poolSize = 4096
	// Maintenance notifications are for the caller's long-lived pools.
	disabled := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	switch c := c.(type) {
	case *redis.Client:
		opt := *c.Options()
		opt.PoolSize, opt.MaxRetries, opt.MaintNotificationsConfig = poolSize, -1, disabled
		derived := redis.NewClient(&opt)
		relayHooks(c, derived) // the caller's hooks see its commands
		return derived, true
	case *redis.ClusterClient:
		opt := *c.Options()
		opt.PoolSize, opt.MaxRetries, opt.MaintNotificationsConfig = poolSize, -1, disabled
		// go-redis appends the nodes it discovers (a replica promoted in a
		// failover) to Addrs: a shared backing array would be written by
		// both clients at once.
		opt.Addrs = slices.Clone(opt.Addrs)
		derived := redis.NewClusterClient(&opt)
		relayHooks(c, derived)
		return derived, true
	}
	return c, false
}

// reader returns the client for blocking reads, claims and takes.
func (s *StreamsSubscriber) reader() redis.UniversalClient {
	s.blockingMu.Lock()
	defer s.blockingMu.Unlock()
	return s.blocking
}

// primaryMoved replaces the client of blocking reads after Sentinel
// replaced the primary: its connections may be on the old one, where no
// new entries arrive (see primaryWatch). Closing it ends the reads in
// progress there; the readers resume on the new client.
func (s *StreamsSubscriber) primaryMoved(time.Time) {
	s.blockingMu.Lock()
	if s.blockingClosed {
		s.blockingMu.Unlock()
		return
	}
	old := s.blocking
	s.blocking, _ = blockingClient(s.config.Client)
	s.blockingMu.Unlock()
	s.logger.Info("Sentinel replaced the primary; reading from the new one", nil)
	_ = old.Close()
}

// Subscribe returns a channel of the topic's messages. The consumer group is
// created on first use (with the stream, if missing), and the consumer name
// leased (see StreamsSubscriberConfig.Consumer). The channel is closed
// when ctx is done or the subscriber closes; messages then unacked go to
// the next Subscribe on the topic or, when none is left, back to the group.
func (s *StreamsSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	t, err := s.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	return t.inbox.subscribe(ctx)
}

// SubscribeInitialize creates the topic's consumer group (and stream) so
// that entries published from now on are kept for the group. It implements
// message.SubscribeInitializer.
func (s *StreamsSubscriber) SubscribeInitialize(topic string) error {
	_, err := s.topic(context.Background(), topic)
	return err
}

// topic returns the topic's state, setting it up on first use.
func (s *StreamsSubscriber) topic(ctx context.Context, name string) (*streamsTopic, error) {
	switch dead := s.config.DeadLetterTopic(name); dead {
	case name:
		return nil, configError("StreamsSubscriberConfig.DeadLetterTopic", fmt.Sprintf("names %q its own dead-letter stream: its dead letters would be delivered again, and again", name))
	case "":
		return nil, configError("StreamsSubscriberConfig.DeadLetterTopic", fmt.Sprintf("gives no dead-letter stream for %q", name))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSubscriberClosed
	}
	t, known := s.topics[name]
	if !known {
		t = newStreamsTopic(s, name)
		s.topics[name] = t
	}
	s.mu.Unlock()

	if !known {
		t.initErr = t.init(ctx)
		s.mu.Lock()
		closed := s.closed && t.initErr == nil
		switch {
		case t.initErr != nil:
			delete(s.topics, name)
		case closed:
			t.initErr = ErrSubscriberClosed
		default:
			t.start()
		}
		s.mu.Unlock()
		if closed && t.grouped() {
			// Close ran meanwhile, perhaps before the name was leased.
			t.releaseHeld()
			t.releaseName()
		}
		close(t.ready)
	}

	select {
	case <-t.ready:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if t.initErr != nil {
		if errors.Is(t.initErr, ErrSubscriberClosed) {
			return nil, t.initErr
		}
		return nil, fmt.Errorf("redisbus: subscribe to %q: %w", name, t.initErr)
	}
	return t, nil
}

// Topics returns the streams the subscriber reads now, sorted: what a
// monitor (such as the redisbusprom collector) watches for it.
func (s *StreamsSubscriber) Topics() []string {
	s.mu.Lock()
	topics := make([]string, 0, len(s.topics))
	for name := range s.topics {
		topics = append(topics, name)
	}
	s.mu.Unlock()
	slices.Sort(topics)
	return topics
}

// DeadLetterTopic returns the name of topic's dead-letter stream
// (StreamsSubscriberConfig.DeadLetterTopic).
func (s *StreamsSubscriber) DeadLetterTopic(topic string) string {
	return s.config.DeadLetterTopic(topic)
}

// Stats returns the subscriber's counters.
func (s *StreamsSubscriber) Stats() StreamsSubscriberStats {
	s.mu.Lock()
	held := 0
	for _, t := range s.topics {
		held += t.held.count()
	}
	s.mu.Unlock()
	return StreamsSubscriberStats{
		Read:               s.stats.read.Load(),
		Claimed:            s.stats.claimed.Load(),
		Delivered:          s.stats.delivered.Load(),
		Acked:              s.stats.acked.Load(),
		Nacked:             s.stats.nacked.Load(),
		DeadLettered:       s.stats.deadLettered.Load(),
		DeadLetterFailures: s.stats.deadLetterFailures.Load(),
		Lost:               s.stats.lost.Load(),
		Released:           s.stats.released.Load(),
		Trimmed:            s.stats.trimmed.Load(),
		Held:               held,
		DelayedMoved:       s.stats.delayedMoved.Load(),
		MaxDelayedLateness: time.Duration(s.stats.maxLateness.Load()),
		Rescheduled:        s.stats.rescheduled.Load(),
	}
}

// String names the subscriber in logs and metrics (Watermill's
// components/metrics subscriber_name label) by its consumer group, so that
// the series of different groups stay apart; the consumer name, which
// differs per process, is left out.
func (s *StreamsSubscriber) String() string {
	if s.config.ConsumerGroup == "" {
		return "redisbus.StreamsSubscriber(fan-out)"
	}
	return "redisbus.StreamsSubscriber(group=" + s.config.ConsumerGroup + ")"
}

// Close closes every subscription channel and cancels the contexts of the
// messages handed out; waits up to CloseTimeout for those messages to be
// acked or nacked (a Router closes its subscribers while its handlers still
// run); sends the acks not yet sent; hands every entry it holds unacked back
// to its group, so that the other consumers take them at once; gives up
// its consumer names; and returns when the subscriber's goroutines have
// exited. Close does not close the client and is idempotent: concurrent
// calls all return once it is done.
//
// Close returns within CloseTimeout + 1s, whatever Redis does.
// When Redis has not answered by then, Close gives up waiting, with an
// error: acks not sent then are lost (those messages come again), entries
// not handed back are claimed after ClaimMinIdle, and the consumer name
// lapses after ConsumerLease. The goroutines still waiting on Redis
// through the client you gave exit when its timeouts end their calls.
func (s *StreamsSubscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.closeDone
		return nil
	}
	s.closed = true
	close(s.closing)
	topics := make([]*streamsTopic, 0, len(s.topics))
	var groupReaders []*streamsTopic // started: none starts after closed is set
	for _, t := range s.topics {
		topics = append(topics, t)
		if t.started && t.grouped() {
			groupReaders = append(groupReaders, t)
		}
	}
	s.mu.Unlock()

	bound := closeGrace + max(s.config.CloseTimeout, 0)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		s.wakes.close()
		// Reads of consumer groups end with what they got (see
		// readerConn); what is left, fan-out reads included, is cut off.
		stopReaders(groupReaders)
		if s.ownBlocking {
			s.blockingMu.Lock()
			s.blockingClosed = true
			_ = s.blocking.Close() // interrupts blocking reads
			s.blockingMu.Unlock()
		}
		s.wg.Wait()
		if s.config.CloseTimeout > 0 {
			deadline := time.NewTimer(s.config.CloseTimeout)
			for _, t := range topics {
				if t.awaitInFlight(deadline.C) {
					break
				}
			}
			deadline.Stop()
		}
		// The dispatchers have surrendered what they held: release it,
		// with the acks, and then the names.
		s.acker.close(topics)
		for _, t := range topics {
			t.releaseName()
		}
	}()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	var err error
	select {
	case <-finished:
	case <-timer.C:
		err = fmt.Errorf("redisbus: StreamsSubscriber.Close gave up after %s: Redis did not answer; acks not sent are lost (those messages come again)", bound)
		s.logger.Error("Close gave up waiting for Redis", err, nil)
	}
	close(s.closeDone)
	return err
}

// observeRoundTrip adds the time a non-blocking round trip took to the
// estimate roundTrip returns (a moving average; failed ones, which may have
// waited for a timeout, do not count).
func (s *StreamsSubscriber) observeRoundTrip(d time.Duration, err error) {
	if err != nil && !errors.Is(err, redis.Nil) {
		return
	}
	d = min(d, maxRoundTrip)
	for {
		old := s.rtt.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)/8
		}
		if s.rtt.CompareAndSwap(old, next) {
			return
		}
	}
}

// roundTrip is the current estimate of a round trip to Redis.
func (s *StreamsSubscriber) roundTrip() time.Duration { return time.Duration(s.rtt.Load()) }

// maxRoundTrip caps one sample of observeRoundTrip: a stall is not the
// distance to Redis.
const maxRoundTrip = time.Second

// closeGrace is how long Close gives Redis, beyond CloseTimeout, for the
// last acks, the hand-back and the names.
const closeGrace = time.Second

// isRedisError reports whether err is a Redis error reply starting with
// prefix, such as "NOGROUP" or "BUSYGROUP".
func isRedisError(err error, prefix string) bool {
	var redisErr redis.Error
	return errors.As(err, &redisErr) && strings.HasPrefix(redisErr.Error(), prefix)
}
