package localcache

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Backoff between attempts to subscribe again after the subscription
// ended (Redis refused the topic when the connection came back, say).
const (
	minResubscribeBackoff = 100 * time.Millisecond
	maxResubscribeBackoff = 5 * time.Second
)

// disconnected is the Subscriber's OnDisconnect: invalidations published
// from now on are missed, so nothing stored can be vouched for until the
// connection is back, and nothing loaded meanwhile either.
func (c *Cache[V]) disconnected(w redisbus.LossWindow) {
	if !slices.Contains(w.Topics, c.config.Topic) {
		return
	}
	c.stats.losses.Add(1)
	c.transition(func() { c.connUp = false },
		"Invalidations subscription lost: entries are not served until it is back", w)
}

// reconnected is the Subscriber's OnReconnect: invalidations published
// from now on arrive, those of the window are unknown, so what was stored
// before is cleared (again: disconnected cleared it) and loads that began
// before are not stored.
func (c *Cache[V]) reconnected(w redisbus.LossWindow) {
	if !slices.Contains(w.Topics, c.config.Topic) {
		// Redis refused the topic on the new connection: the Subscribe
		// channel ends, and consume subscribes again.
		c.transition(func() { c.connUp, c.subscribed = true, false },
			"Invalidations subscription refused after a reconnection: entries are not served until it is back", w)
		return
	}
	c.transition(func() { c.connUp = true },
		"Invalidations subscription back: entries stored before it are cleared, since the invalidations published meanwhile were missed", w)
}

func (c *Cache[V]) setSubscribed(subscribed bool) {
	why := "Invalidations subscribed: entries are served"
	if !subscribed {
		why = "Invalidations subscription ended: entries are not served until it is back"
	}
	c.transition(func() { c.subscribed = subscribed }, why, redisbus.LossWindow{})
}

// transition applies change to the subscription's state and clears the
// cache: whichever way it went, invalidations may have been missed around
// it. The clear is an invalidation of all, so that loads in flight are not
// stored either, and the Sync calls waiting are released, since nothing
// stored before them is left.
func (c *Cache[V]) transition(change func(), why string, w redisbus.LossWindow) {
	c.mu.Lock()
	change()
	c.up = c.subscribed && c.connUp && !c.closed
	c.applyLocked(invalidation{kind: kindAll})
	syncs := c.takeSyncsLocked()
	up := c.up
	c.mu.Unlock()
	release(syncs)
	fields := watermill.LogFields{"topic": c.config.Topic, "serving": up}
	if !w.From.IsZero() {
		fields["from"] = w.From
	}
	if !w.To.IsZero() {
		fields["to"] = w.To
	}
	if w.Err != nil {
		fields["err"] = w.Err.Error()
	}
	c.logger.Info(why, fields)
}

// lose clears the cache after invalidations may have been missed while the
// subscription stayed up.
func (c *Cache[V]) lose(why string, fields watermill.LogFields) {
	c.stats.losses.Add(1)
	c.mu.Lock()
	c.applyLocked(invalidation{kind: kindAll})
	syncs := c.takeSyncsLocked()
	c.mu.Unlock()
	release(syncs)
	c.logger.Error(why+": the cache is cleared", nil, fields)
}

// consume applies the invalidations that arrive, and subscribes again when
// the subscription ends before Close.
func (c *Cache[V]) consume(messages <-chan *message.Message) {
	for {
		for msg := range messages {
			c.receive(msg)
			msg.Ack()
		}
		if c.ctx.Err() != nil {
			return
		}
		c.stats.losses.Add(1)
		c.setSubscribed(false)
		if messages = c.resubscribe(); messages == nil {
			return
		}
		c.setSubscribed(true)
	}
}

// resubscribe subscribes the topic again, with backoff, until it succeeds
// or the cache closes (nil).
func (c *Cache[V]) resubscribe() <-chan *message.Message {
	backoff := minResubscribeBackoff
	for {
		messages, err := c.sub.Subscribe(c.ctx, c.config.Topic)
		if err == nil {
			return messages
		}
		if c.ctx.Err() != nil {
			return nil
		}
		c.logger.Error("Cannot subscribe to the invalidations; retrying", err,
			watermill.LogFields{"topic": c.config.Topic, "backoff": backoff.String()})
		select {
		case <-time.After(backoff):
		case <-c.ctx.Done():
			return nil
		}
		backoff = min(2*backoff, maxResubscribeBackoff)
	}
}

// receive applies one message of the topic.
func (c *Cache[V]) receive(msg *message.Message) {
	// An inbox that overflowed dropped messages: invalidations, maybe.
	if dropped := c.sub.Stats().Dropped; dropped != c.dropped {
		c.lose("The invalidations subscription dropped messages (its inbox was full)",
			watermill.LogFields{"topic": c.config.Topic, "dropped": dropped - c.dropped})
		c.dropped = dropped
	}
	inv, ok := parse(msg.Payload)
	own := msg.Metadata.Get(originKey) == c.id
	switch {
	case !ok:
		c.stats.unreadable.Add(1)
		c.lose("A message on the invalidations topic is no invalidation", watermill.LogFields{
			"topic": c.config.Topic, "uuid": msg.UUID, "payload_bytes": len(msg.Payload), "payload_start": start(msg.Payload),
		})
	case inv.kind == kindSync:
		if own {
			c.synced(inv.name)
		}
	case own:
		// Applied when it was sent.
	default:
		c.mu.Lock()
		c.applyLocked(inv)
		c.mu.Unlock()
		c.stats.invalidations.Add(1)
	}
}

// start is the beginning of a payload, for a log line.
func start(payload []byte) string {
	const n = 32
	if len(payload) > n {
		return strconv.Quote(string(payload[:n])) + "…"
	}
	return strconv.Quote(string(payload))
}

// Sync returns once every invalidation that Redis accepted before the
// call, from any node, is applied here, or the cache was cleared since
// (which covers them). A read after Sync returns no value older than those
// invalidations: a node that must see another node's change (the request
// that follows a write, on another node) can ask for that, at the cost of
// a round trip through Redis. While the cache is down it returns at once:
// it serves nothing then.
func (c *Cache[V]) Sync(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if !c.up {
		c.mu.Unlock()
		return nil
	}
	c.syncSeq++
	id := strconv.FormatUint(c.syncSeq, 10)
	done := make(chan struct{})
	c.syncs[id] = done
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.syncs, id)
		c.mu.Unlock()
	}()

	// Redis delivers what it accepted in order on the subscription's
	// connection: the marker comes after every invalidation accepted before
	// it, unless the connection is lost, which clears the cache.
	if err := c.publish("a sync marker", c.message(ctx, invalidation{kind: kindSync, name: id})); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// synced releases the Sync call whose marker arrived.
func (c *Cache[V]) synced(id string) {
	c.mu.Lock()
	done := c.syncs[id]
	delete(c.syncs, id)
	c.mu.Unlock()
	if done != nil {
		close(done)
	}
}

// takeSyncsLocked takes the Sync calls waiting. The caller holds mu.
func (c *Cache[V]) takeSyncsLocked() map[string]chan struct{} {
	if len(c.syncs) == 0 {
		return nil
	}
	syncs := c.syncs
	c.syncs = map[string]chan struct{}{}
	return syncs
}

func release(syncs map[string]chan struct{}) {
	for _, done := range syncs {
		close(done)
	}
}
