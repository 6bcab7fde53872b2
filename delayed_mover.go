package redisbus

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// delayedWakes is a StreamsSubscriber's subscription to the wake channels
// of its topics (see delayed.go): a Pub/Sub Subscriber of its own, made on
// first use. A wake that is lost costs a message at most
// DelayedPollInterval of lateness.
type delayedWakes struct {
	mu     sync.Mutex
	sub    *Subscriber
	closed bool
}

// subscribe returns the wakes of topic, or nil if they cannot be had (the
// mover then polls).
func (w *delayedWakes) subscribe(s *StreamsSubscriber, topic string) <-chan *message.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	if w.sub == nil {
		_, cluster := s.config.Client.(*redis.ClusterClient)
		sub, err := NewSubscriber(SubscriberConfig{
			Client:    s.config.Client,
			Sharded:   cluster, // the wake channel is in the stream's slot
			Marshaler: RawMarshaler{},
			InboxSize: 16, // a wake says only "look now"
		}, s.logger.With(watermill.LogFields{"subscription": "delayed message wake-ups"}))
		if err != nil {
			s.logger.Error("Cannot subscribe to wake-ups of delayed messages; polling instead", err, nil)
			return nil
		}
		w.sub = sub
	}
	wakes, err := w.sub.Subscribe(context.Background(), delayedWakeChannel(topic))
	if err != nil {
		s.logger.Error("Cannot subscribe to wake-ups of delayed messages; polling instead", err, watermill.LogFields{"topic": topic})
		return nil
	}
	return wakes
}

func (w *delayedWakes) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.sub != nil {
		_ = w.sub.Close()
	}
}

// moveDelayed moves the topic's delayed messages into its stream as they
// fall due, until Close: it sleeps until the next one is due (by Redis'
// clock), a wake says one is due sooner, or DelayedPollInterval passed.
func (t *streamsTopic) moveDelayed() {
	cfg := t.s.config
	var wakes <-chan *message.Message
	subscribed := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	backoff := minReconnectBackoff
	for {
		select {
		case <-t.closing():
			return
		case <-timer.C:
		case msg, ok := <-wakes:
			if !ok {
				wakes = nil // closed with the subscriber: poll until Close
				continue
			}
			msg.Ack()
			timer.Stop()
		}
		wait := cfg.DelayedPollInterval
		reply, err := t.moveDue()
		switch {
		case isRedisError(err, "NOPERM"):
			// An ACL from before delayed messages: this subscriber goes
			// on without moving them (see docs/operating-redis.md).
			t.logger.Info("This subscriber's ACL does not allow moving delayed messages; it leaves them to others", watermill.LogFields{"error": err.Error()})
			return
		case err != nil:
			slotmap.Refresh(err, cfg.Client)
			if t.moveErrorLog.allow() {
				t.logger.Error("Cannot move delayed messages into the stream; trying again", err, nil)
			}
			wait = min(wait, backoff)
			backoff = min(2*backoff, maxReconnectBackoff)
		case reply.moved == cfg.DelayedMoveBatch:
			wait = 0 // more may be due
		default:
			backoff = minReconnectBackoff
			if !reply.nextDue.IsZero() {
				wait = min(wait, max(reply.nextDue.Sub(reply.now), 0))
			}
		}
		if err == nil && !subscribed {
			// Once moving is known to be allowed: a subscriber whose ACL
			// forbids it does not subscribe either. Subscribe returns once
			// Redis confirmed it; a message scheduled before that woke
			// nobody, so look again at once.
			subscribed = true
			if wakes = t.s.wakes.subscribe(t.s, t.name); wakes != nil {
				wait = 0
			}
		}
		timer.Reset(wait)
	}
}

// moveDue runs one move and counts what it moved.
func (t *streamsTopic) moveDue() (moveReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), moveTimeout)
	defer cancel()
	raw, err := delayedMoveScript.Run(ctx, t.s.config.Client, []string{delayedKey(t.name), t.name}, t.s.config.DelayedMoveBatch).Slice()
	if err != nil {
		return moveReply{}, err
	}
	reply, err := parseMoveReply(raw)
	if err != nil {
		return reply, err
	}
	t.s.stats.delayedMoved.Add(uint64(reply.moved))
	for _, late := range reply.lateness {
		t.s.stats.observeLateness(late)
	}
	return reply, nil
}

// moveTimeout bounds one move: a script of DelayedMoveBatch XADDs.
const moveTimeout = 10 * time.Second

// observeLateness keeps the largest lateness of a moved message.
func (c *streamsCounters) observeLateness(d time.Duration) {
	for {
		old := c.maxLateness.Load()
		if int64(d) <= old || c.maxLateness.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// Scheduled returns how many delayed messages of topic wait to enter its
// stream, and when the first of them is due (zero if none).
func (s *StreamsSubscriber) Scheduled(ctx context.Context, topic string) (int64, time.Time, error) {
	key := delayedKey(topic)
	var card *redis.IntCmd
	var head *redis.ZSliceCmd
	_, err := s.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		card = pipe.ZCard(ctx, key)
		head = pipe.ZRangeWithScores(ctx, key, 0, 0)
		return nil
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	var first time.Time
	if h := head.Val(); len(h) > 0 {
		first = time.UnixMilli(int64(h[0].Score))
	}
	return card.Val(), first, nil
}

// laterDelivery reports when a nacked message asks to come back: its
// handler set a delay on it still ahead, directly or through
// middleware.DelayOnError. arrived is the delay the message was delivered
// with (delayOf): left as it was, it is no new delay, and the Nack a
// plain one. Except a delay under a second: DelayOnError may set one that
// reads exactly like it (the same for, the until in the same second), so
// it is taken as set again, and delays the message again, until the
// second its until names is over (see dueOf).
func laterDelivery(msg *message.Message, arrived string) (time.Time, bool) {
	if arrived != "" && delayOf(msg) == arrived {
		if d, err := time.ParseDuration(msg.Metadata.Get(delayedForKey)); err != nil || d >= time.Second {
			return time.Time{}, false
		}
	}
	now := time.Now()
	due, delayed, err := dueOfStamped(msg, now, false)
	if err != nil || !delayed || !due.After(now) {
		return time.Time{}, false
	}
	return due, true
}

// delayOf is msg's delay metadata as one string, "" when it has none.
func delayOf(msg *message.Message) string {
	until := msg.Metadata.Get(delayedUntilKey)
	if until == "" {
		return ""
	}
	return until + "|" + msg.Metadata.Get(delayedForKey)
}

// priorDeliveries reads fieldPriorDeliveries of an entry's fields.
func priorDeliveries(values map[string]any) int {
	s, _ := values[fieldPriorDeliveries].(string)
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0
	}
	return n
}
