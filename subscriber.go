package redisbus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// SubscriberConfig configures a Subscriber. The zero value of every field
// but Client means its documented default.
type SubscriberConfig struct {
	// Client opens the subscription connections. Required. The Subscriber
	// never closes it.
	Client redis.UniversalClient

	// Marshaler decodes messages. Nil means EnvelopeMarshaler.
	Marshaler Marshaler

	// Sharded subscribes with SSUBSCRIBE (Redis 7.0+), to receive what
	// publishers with PublisherConfig.Sharded send. Each topic then has a
	// connection of its own, because in Redis Cluster each shard channel
	// lives on the node that owns its slot. Without it, all topics of a
	// Subscriber share one connection.
	Sharded bool

	// InboxSize bounds how many messages each topic holds in this process
	// while they wait for a consumer. Zero means 10,000.
	InboxSize int

	// InboxBytes bounds the memory each topic's waiting messages hold in
	// this process, with InboxOverflow deciding what goes; a lone message
	// larger than it is still taken. A message counts twice its size: it
	// is kept as received (for redeliveries) and decoded. Zero means
	// 64 MiB; negative means no byte limit.
	InboxBytes int

	// InboxOverflow says which message goes when a full inbox receives
	// another. The zero value is DropOldest.
	InboxOverflow OverflowPolicy

	// MaxDeliveries is how many times a message is handed to a Subscribe
	// channel: when the last of them is nacked, the message is dropped,
	// counted (Stats().GaveUp) and logged, so that one message its handler
	// always refuses does not hold its topic forever. Zero means 1,000;
	// negative means no limit.
	MaxDeliveries int

	// UnsubscribeAfter is how long a topic stays subscribed once no
	// Subscribe call uses it (after the last one ended, or after
	// SubscribeInitialize): then it is unsubscribed from Redis and what it
	// buffered is dropped (counted in Stats().Dropped), so an application
	// that subscribes per user or per entity does not grow without bound.
	// Zero means 1 minute; negative means never.
	UnsubscribeAfter time.Duration

	// NackResendDelay is how long a nacked message waits before it is
	// offered again. It keeps its place at the head of the inbox meanwhile,
	// so order holds. Zero means 100ms; a negative value means at once.
	NackResendDelay time.Duration

	// SubscribeTimeout bounds how long Subscribe and SubscribeInitialize wait
	// for Redis to confirm a new subscription. Zero means 10s. A topic whose
	// confirmation timed out stays registered: it starts receiving when
	// Redis answers, and the next Subscribe waits for that again.
	SubscribeTimeout time.Duration

	// HealthCheckInterval is how long a subscription connection may be
	// silent before it is pinged; when the ping is not answered within
	// another interval, the connection is replaced. This catches connections
	// that died without an error, e.g. behind a failed load balancer. Zero
	// means 3s; at least 10ms (below, a healthy connection's answer can
	// come too late for it, and connections are replaced for nothing).
	HealthCheckInterval time.Duration

	// OnReconnect, if set, is called when a lost subscription connection is
	// back, with the window in which messages may have been missed. It runs
	// on the connection's read loop: it must return quickly.
	OnReconnect func(LossWindow)

	// OnDisconnect, if set, is called when a subscription connection is
	// found lost, before it is replaced, with the window so far: To is
	// zero, and Topics are the topics that receive nothing until
	// OnReconnect reports the same connection back. From then on messages
	// are being missed, so that a process keeping state from them (a
	// cache) can stop trusting it at once instead of when the connection
	// is back, which may be much later. Each OnDisconnect is followed by
	// one OnReconnect (unless the Subscriber closes first), whose From may
	// be earlier. It runs on the connection's read loop: it must return
	// quickly.
	OnDisconnect func(LossWindow)
}

func (c *SubscriberConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = EnvelopeMarshaler{}
	}
	if c.InboxSize == 0 {
		c.InboxSize = 10_000
	}
	if c.InboxBytes == 0 {
		c.InboxBytes = 64 << 20
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = 1000
	}
	if c.UnsubscribeAfter == 0 {
		c.UnsubscribeAfter = time.Minute
	}
	if c.NackResendDelay == 0 {
		c.NackResendDelay = 100 * time.Millisecond
	}
	if c.SubscribeTimeout == 0 {
		c.SubscribeTimeout = 10 * time.Second
	}
	if c.HealthCheckInterval == 0 {
		c.HealthCheckInterval = 3 * time.Second
	}
}

// Validate reports the first invalid field, if any.
func (c SubscriberConfig) Validate() error {
	switch {
	case c.Client == nil:
		return configError("SubscriberConfig.Client", "is required")
	case c.InboxSize < 0:
		return configError("SubscriberConfig.InboxSize", fmt.Sprintf("must not be negative, got %d", c.InboxSize))
	case c.InboxOverflow != DropOldest && c.InboxOverflow != DropNewest:
		return configError("SubscriberConfig.InboxOverflow", fmt.Sprintf("unknown policy %d", c.InboxOverflow))
	case c.SubscribeTimeout < 0:
		return configError("SubscriberConfig.SubscribeTimeout", "must not be negative")
	case c.HealthCheckInterval < 0:
		return configError("SubscriberConfig.HealthCheckInterval", "must not be negative")
	case c.HealthCheckInterval > 0 && c.HealthCheckInterval < MinHealthCheckInterval:
		return configError("SubscriberConfig.HealthCheckInterval", fmt.Sprintf("must be at least %s, got %s", MinHealthCheckInterval, c.HealthCheckInterval))
	}
	return nil
}

// MinHealthCheckInterval bounds SubscriberConfig.HealthCheckInterval (and
// the intervals of what subscribes through a Subscriber) from below: a
// ping answered by a healthy Redis must not count as lost.
const MinHealthCheckInterval = 10 * time.Millisecond

// LossWindow describes a time in which a subscription connection was down:
// messages published to Topics between From and To may not have been
// received. From is the last moment the connection was known to work, so
// the window is conservative.
type LossWindow struct {
	Topics []string
	From   time.Time
	To     time.Time
	Err    error // what broke the connection
}

// SubscriberStats are counters since the Subscriber was created.
type SubscriberStats struct {
	Received     uint64 // messages read from Redis
	Delivered    uint64 // messages handed to Subscribe channels, redeliveries included
	Acked        uint64
	Nacked       uint64
	Dropped      uint64 // messages discarded by InboxOverflow
	DecodeErrors uint64 // payloads the Marshaler refused (delivered raw)
	Reconnects   uint64 // lost subscription connections that came back
	Refused      uint64 // topics Redis refused to subscribe (NOPERM, wrong password…)
	GaveUp       uint64 // messages dropped after MaxDeliveries deliveries
	Unsubscribed uint64 // topics unsubscribed after UnsubscribeAfter unused
	Buffered     int    // messages waiting in inboxes now
	LastLoss     LossWindow
}

type subscriberCounters struct {
	received, delivered, acked, nacked, dropped, decodeErrors, reconnects, refused atomic.Uint64
	gaveUp, unsubscribed                                                           atomic.Uint64
}

// Subscriber is a best-effort Watermill Subscriber over Redis SUBSCRIBE.
//
// Each topic is subscribed once per Subscriber, however many Subscribe calls
// share it. Messages wait in a bounded per-topic inbox
// ([SubscriberConfig.InboxSize], [SubscriberConfig.InboxBytes]) until a
// consumer acks them, so a slow handler never blocks the connection. Several
// Subscribe calls on one topic share its messages: each message is offered
// to every channel with room and the first to read it takes it, and a
// channel holds one unacked message at a time, which keeps order per
// channel. A nacked message goes back to the head of the inbox; one whose
// channel closed before it was acked goes to the next Subscribe. A topic stays
// subscribed from its first Subscribe or SubscribeInitialize until no
// Subscribe call has used it for UnsubscribeAfter, or until Close.
type Subscriber struct {
	config SubscriberConfig
	logger watermill.LoggerAdapter
	stats  subscriberCounters

	mu       sync.Mutex
	closed   bool
	topics   map[string]*pubsubTopic
	conns    map[string]*subscriptionConn // by connKey
	lastLoss LossWindow

	// routes maps channel names to inboxes for the read loops, which must not
	// take mu per message. It is replaced, never modified.
	routes atomic.Pointer[map[string]*pubsubTopic]

	closing chan struct{}
	wg      sync.WaitGroup
}

// NewSubscriber creates a Subscriber. A nil logger means no logging.
func NewSubscriber(config SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	s := &Subscriber{
		config:  config,
		logger:  logger,
		topics:  map[string]*pubsubTopic{},
		conns:   map[string]*subscriptionConn{},
		closing: make(chan struct{}),
	}
	s.routes.Store(&map[string]*pubsubTopic{})
	if w := newPrimaryWatch(config.Client); w != nil {
		s.wg.Go(func() { w.run(s.closing, primaryCheckInterval, s.primaryMoved) })
	}
	if cluster, ok := config.Client.(*redis.ClusterClient); ok && config.Sharded {
		s.wg.Go(func() { s.watchSlotOwners(cluster) })
	}
	return s, nil
}

// primaryMoved has every subscription connection made before since
// reconnect: Sentinel replaced the primary, and a connection to the old
// one hears nothing published on the new (see primaryWatch).
func (s *Subscriber) primaryMoved(since time.Time) {
	for _, conn := range s.connections() {
		conn.stale(since, errPrimaryMoved)
	}
}

// watchSlotOwners moves Sharded subscriptions to their slot's master when
// it changed without Redis unsubscribing them. After a failover the old
// master, now a replica of the new one, may keep its shard channels'
// subscribers and pass them the messages it replicates; but it hears them
// only while it replicates, and SPUBLISH on the master counts its own
// subscribers alone (wsroute routes by that count). Every
// primaryCheckInterval the client reads its slot map again, and a
// connection whose channel's master is another than when it connected
// subscribes again.
func (s *Subscriber) watchSlotOwners(cluster *redis.ClusterClient) {
	ticker := time.NewTicker(primaryCheckInterval)
	defer ticker.Stop()
	checked := time.Now()
	for {
		select {
		case <-s.closing:
			return
		case <-ticker.C:
		}
		cluster.ReloadState(context.Background()) // in the background: the next check sees it
		for _, conn := range s.connections() {
			if conn.ownerChanged() {
				conn.stale(checked, errSlotOwnerChanged)
			}
		}
		checked = time.Now()
	}
}

// connections returns the subscription connections.
func (s *Subscriber) connections() []*subscriptionConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*subscriptionConn, 0, len(s.conns))
	for _, conn := range s.conns {
		conns = append(conns, conn)
	}
	return conns
}

// slotOwner returns the address of the master that owns the slot of
// channels[0] in the client's slot map, or "" when the client is not a
// cluster client (or the map has no owner).
func (s *Subscriber) slotOwner(channels []string) string {
	cluster, ok := s.config.Client.(*redis.ClusterClient)
	if !ok || !s.config.Sharded || len(channels) == 0 {
		return ""
	}
	master, err := cluster.MasterForKey(context.Background(), channels[0])
	if err != nil {
		return ""
	}
	return master.Options().Addr
}

// Subscribe returns a channel of the topic's messages. It returns once
// Redis has confirmed the subscription, so a message published after it
// returns is received. The channel is closed when ctx is done or the
// Subscriber closes; a message that was delivered but not acked by then is
// handed to the next Subscribe on the topic.
//
// Each channel gets its next message only after the previous one was acked
// or nacked. Several Subscribe calls on one topic share its messages: each
// message goes to one of them.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	t, err := s.subscribeTopic(ctx, topic, true)
	if err != nil {
		return nil, err
	}
	messages, err := t.inbox.subscribe(ctx)
	if err != nil {
		s.userLeft(t)
		return nil, err
	}
	context.AfterFunc(ctx, func() { s.userLeft(t) })
	return messages, nil
}

// SubscribeInitialize subscribes to the topic without consuming: messages
// published from now on wait in the topic's inbox for the first Subscribe.
// It implements message.SubscribeInitializer.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	_, err := s.subscribeTopic(context.Background(), topic, false)
	return err
}

// subscribeTopic returns the topic once Redis confirmed it, subscribing
// first when the topic is new. A user (a Subscribe call) counts against
// the topic's idle timer from here; it leaves with userLeft.
func (s *Subscriber) subscribeTopic(ctx context.Context, topic string, user bool) (_ *pubsubTopic, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSubscriberClosed
	}
	t, known := s.topics[topic]
	if !known {
		t = newPubSubTopic(s, topic)
	}
	if user {
		defer func() {
			if err != nil {
				s.userLeft(t)
			}
		}()
	}
	if known {
		s.inUse(t, user)
		s.mu.Unlock()
	} else {
		s.topics[topic] = t
		if user {
			s.inUse(t, user)
		} else {
			// A SubscribeInitialize: the topic counts as unused from Redis'
			// confirmation on, so that a confirmation slower than
			// UnsubscribeAfter does not retire it under the call waiting.
			defer s.armIdleIfUnused(t)
		}
		s.setRoute(topic, t) // before SUBSCRIBE, so no message finds no inbox
		s.wg.Go(t.inbox.run)
		conn := s.connFor(topic)
		s.mu.Unlock()

		// A failed write is final only when no reconnection can help (a
		// wrong password, a certificate not trusted): otherwise the read
		// loop reconnects and subscribes every registered channel, and the
		// confirmation below arrives then.
		if err := conn.subscribe(ctx, topic); err != nil {
			if permanent(err) {
				s.refuse(topic, err)
			} else {
				s.logger.Debug("SUBSCRIBE not sent, waiting for reconnection", watermill.LogFields{"topic": topic, "err": err.Error()})
			}
		}
	}

	timer := time.NewTimer(s.config.SubscribeTimeout)
	defer timer.Stop()
	select {
	case <-t.confirmed:
		return t, nil
	case <-t.stop:
		if t.refusal != nil {
			return nil, fmt.Errorf("redisbus: subscribe to %q: %w", topic, t.refusal)
		}
		return nil, ErrSubscriberClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("redisbus: subscribe to %q: %w", topic, context.Cause(ctx))
	case <-timer.C:
		err := fmt.Errorf("redisbus: subscribe to %q: Redis did not confirm within %s (SubscriberConfig.SubscribeTimeout)", topic, s.config.SubscribeTimeout)
		if last := s.connError(topic); last != nil {
			err = fmt.Errorf("%w; last error: %w", err, last)
		}
		return nil, err
	case <-s.closing:
		return nil, ErrSubscriberClosed
	}
}

// inUse counts a user of t, or arms its idle timer when it has none (a
// SubscribeInitialize). The caller holds mu.
func (s *Subscriber) inUse(t *pubsubTopic, user bool) {
	if user {
		t.users++
		if t.idle != nil {
			t.idle.Stop()
			t.idle = nil
		}
		return
	}
	if t.users == 0 {
		select {
		case <-t.confirmed:
			s.armIdle(t)
		default: // armed when the call that subscribed it has its confirmation
		}
	}
}

// armIdleIfUnused arms t's idle timer unless a Subscribe uses it (or it is
// gone).
func (s *Subscriber) armIdleIfUnused(t *pubsubTopic) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed && t.users == 0 && s.topics[t.name] == t {
		s.armIdle(t)
	}
}

// userLeft counts a Subscribe call that ended (or failed); the last one
// arms the topic's idle timer.
func (s *Subscriber) userLeft(t *pubsubTopic) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.users--
	if t.users == 0 && !s.closed {
		s.armIdle(t)
	}
}

// armIdle (re)starts t's idle timer. The caller holds mu.
func (s *Subscriber) armIdle(t *pubsubTopic) {
	if s.config.UnsubscribeAfter < 0 {
		return
	}
	if t.idle != nil {
		t.idle.Stop()
	}
	t.idle = time.AfterFunc(s.config.UnsubscribeAfter, func() { s.retire(t) })
}

// retire unsubscribes a topic nobody used for UnsubscribeAfter and drops
// what it buffered. It holds mu throughout, so that a Subscribe to the
// topic meanwhile makes a new one whose SUBSCRIBE follows the UNSUBSCRIBE.
func (s *Subscriber) retire(t *pubsubTopic) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || t.users > 0 || s.topics[t.name] != t {
		return
	}
	delete(s.topics, t.name)
	s.removeRoute(t.name)
	if s.config.Sharded {
		// The topic had a connection of its own.
		conn := s.conns[t.name]
		delete(s.conns, t.name)
		conn.close()
	} else {
		s.connFor(t.name).unsubscribe(t.name)
	}
	buffered := t.inbox.buffered()
	s.stats.dropped.Add(uint64(buffered))
	s.stats.unsubscribed.Add(1)
	t.end(nil)
	s.logger.Info("Topic unused for UnsubscribeAfter: unsubscribed", watermill.LogFields{
		"topic": t.name, "dropped_buffered": buffered, "unsubscribe_after": s.config.UnsubscribeAfter.String(),
	})
}

// refuse unregisters a topic Redis refused, ending its Subscribe calls
// with err; the others topics carry on.
func (s *Subscriber) refuse(topic string, err error) {
	s.mu.Lock()
	t := s.topics[topic]
	if t != nil {
		delete(s.topics, topic)
		s.removeRoute(topic)
		s.connFor(topic).forget(topic)
	}
	s.mu.Unlock()
	if t == nil {
		return
	}
	s.stats.refused.Add(1)
	s.logger.Error("Redis refused the subscription; the topic's Subscribe calls end", err, watermill.LogFields{"topic": topic})
	t.end(err)
}

// connError is the last error of the connection that carries topic.
func (s *Subscriber) connError(topic string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if conn := s.conns[s.connKey(topic)]; conn != nil {
		return conn.lastError()
	}
	return nil
}

// connFor returns the connection that carries topic, creating it when
// needed. The caller holds mu.
func (s *Subscriber) connFor(topic string) *subscriptionConn {
	key := s.connKey(topic)
	conn := s.conns[key]
	if conn == nil {
		conn = newSubscriptionConn(s)
		s.conns[key] = conn
		s.wg.Go(conn.run)
	}
	return conn
}

// connKey names the connection that carries topic: its own when Sharded,
// otherwise the one all topics share.
func (s *Subscriber) connKey(topic string) string {
	if s.config.Sharded {
		return topic
	}
	return ""
}

func (s *Subscriber) setRoute(topic string, t *pubsubTopic) {
	old := *s.routes.Load()
	routes := make(map[string]*pubsubTopic, len(old)+1)
	for k, v := range old {
		routes[k] = v
	}
	routes[topic] = t
	s.routes.Store(&routes)
}

func (s *Subscriber) removeRoute(topic string) {
	old := *s.routes.Load()
	routes := make(map[string]*pubsubTopic, len(old))
	for k, v := range old {
		if k != topic {
			routes[k] = v
		}
	}
	s.routes.Store(&routes)
}

func (s *Subscriber) route(channel string) *pubsubTopic {
	return (*s.routes.Load())[channel]
}

func (s *Subscriber) disconnected(w LossWindow) {
	if s.config.OnDisconnect != nil {
		s.config.OnDisconnect(w)
	}
}

func (s *Subscriber) reconnected(w LossWindow) {
	s.stats.reconnects.Add(1)
	s.mu.Lock()
	s.lastLoss = w
	s.mu.Unlock()
	if s.config.OnReconnect != nil {
		s.config.OnReconnect(w)
	}
}

// reloadSlots has a cluster client read the slot map again, in the
// background, when err says it may be out of date (see slotmap), so that
// the next connection for a channel goes to the node that serves its slot
// now: after a redirection, a slot moved away, or a connection lost to a
// node that failed over. go-redis reads it again by itself only when one
// of its own commands is redirected, or after ClusterStateReloadInterval
// (a minute by default).
func (s *Subscriber) reloadSlots(err error) {
	slotmap.Refresh(err, s.config.Client)
}

// Stats returns the Subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	s.mu.Lock()
	buffered := 0
	for _, t := range s.topics {
		buffered += t.inbox.buffered()
	}
	lastLoss := s.lastLoss
	s.mu.Unlock()
	return SubscriberStats{
		Received:     s.stats.received.Load(),
		Delivered:    s.stats.delivered.Load(),
		Acked:        s.stats.acked.Load(),
		Nacked:       s.stats.nacked.Load(),
		Dropped:      s.stats.dropped.Load(),
		DecodeErrors: s.stats.decodeErrors.Load(),
		Reconnects:   s.stats.reconnects.Load(),
		Refused:      s.stats.refused.Load(),
		GaveUp:       s.stats.gaveUp.Load(),
		Unsubscribed: s.stats.unsubscribed.Load(),
		Buffered:     buffered,
		LastLoss:     lastLoss,
	}
}

// String names the subscriber in logs and metrics (Watermill's
// components/metrics subscriber_name label).
func (s *Subscriber) String() string {
	if s.config.Sharded {
		return "redisbus.Subscriber(sharded)"
	}
	return "redisbus.Subscriber"
}

// Close closes every subscription channel and the Redis connections the
// Subscriber opened, and returns when all its goroutines have exited.
// Messages not yet acked are dropped with the inboxes. Close does not close
// the client and is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.closing)
	conns := s.conns
	for _, t := range s.topics {
		if t.idle != nil {
			t.idle.Stop()
		}
		t.end(nil)
	}
	s.mu.Unlock()

	for _, conn := range conns {
		conn.close()
	}
	s.wg.Wait()
	return nil
}
