package redisbus

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

const (
	minReconnectBackoff = 10 * time.Millisecond
	maxReconnectBackoff = time.Second
)

// subscriptionConn is one Redis connection in subscribe mode and the
// goroutine that reads it. It reads with its own loop rather than
// go-redis's PubSub.Channel, which drops a message after 60 seconds when
// its fixed buffer is full and does not report subscription confirmations.
//
// It also subscribes by itself after a reconnect, rather than letting
// go-redis resubscribe every channel in one command: Redis refuses such a
// command as a whole when one channel is forbidden (an ACL user limited to
// some channels), and every topic would go deaf. Each SUBSCRIBE this loop
// sends is remembered until Redis answered it, so an error reply is
// attributed to the command, and so to the topic, it refuses.
type subscriptionConn struct {
	s      *Subscriber
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex // guards what follows against the read loop
	ps       *redis.PubSub
	channels []string       // every channel this connection carries
	sent     []subscribeCmd // SUBSCRIBEs sent on ps not answered in full yet, oldest first
	broken   error          // why ps must be replaced before it is used again
	lastErr  error          // the last error met, for Subscribe's timeout message
	// ready is set once a SUBSCRIBE was written on ps: before that, reading
	// it would dial, and an error from dialing (a wrong password) would
	// pass for a refusal of a command.
	ready bool
	kick  chan struct{} // capacity 1: ps became ready
	// staleSince is when ps was last known to be on the node that serves
	// its channels, once it may no longer be (see stale), and staleCause
	// why; zero otherwise.
	staleSince time.Time
	staleCause error
	// owner is the master that owned the slot of a Sharded connection's
	// channel when ps was made, as the client's slot map said (see
	// Subscriber.watchSlotOwners); empty otherwise.
	owner string
}

// subscribeCmd is a SUBSCRIBE sent. Redis answers it with a confirmation
// per channel, in order, or with one error for all of them.
type subscribeCmd struct {
	channels []string
	answered int
}

// resubscribeBatch is how many channels one SUBSCRIBE carries after a
// reconnect; a batch refused as a whole is asked again channel by channel.
const resubscribeBatch = 100

func newSubscriptionConn(s *Subscriber) *subscriptionConn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &subscriptionConn{s: s, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1)}
	c.ps = c.newPubSub()
	return c
}

// newPubSub returns a PubSub with no channels: it connects on the first
// SUBSCRIBE sent.
func (c *subscriptionConn) newPubSub() *redis.PubSub {
	if c.s.config.Sharded {
		return c.s.config.Client.SSubscribe(c.ctx)
	}
	return c.s.config.Client.Subscribe(c.ctx)
}

// send sends one SUBSCRIBE for channels on ps. The caller holds mu.
func (c *subscriptionConn) send(ctx context.Context, channels []string) error {
	if !c.ready { // ps connects now, where the slot map points
		c.owner = c.s.slotOwner(channels)
	}
	var err error
	if c.s.config.Sharded {
		err = c.ps.SSubscribe(ctx, channels...)
	} else {
		err = c.ps.Subscribe(ctx, channels...)
	}
	if err != nil {
		c.broken, c.lastErr = err, err
		return err
	}
	c.sent = append(c.sent, subscribeCmd{channels: channels})
	c.ready = true
	signal(c.kick)
	return nil
}

// subscribe sends SUBSCRIBE for topic; the read loop sees the answer. When
// it cannot be sent, the read loop reconnects and sends it then.
func (c *subscriptionConn) subscribe(ctx context.Context, topic string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.channels = append(c.channels, topic)
	if c.broken != nil {
		return c.broken
	}
	return c.send(ctx, []string{topic})
}

// lastError is the last error the connection met, if any.
func (c *subscriptionConn) lastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

func (c *subscriptionConn) pubSub() *redis.PubSub {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ps
}

// breaks marks the connection for replacement: nothing is sent on it any
// more, since go-redis may have reconnected it by itself.
func (c *subscriptionConn) breaks(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.broken, c.lastErr = err, err
}

// state says whether ps must be replaced, and whether it can be read.
func (c *subscriptionConn) state() (broken, ready bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken != nil, c.ready
}

// unsubscribe stops carrying channel: it is not subscribed again, and
// Redis is told now when the connection works (the reply, an unsubscribe
// confirmation, is ignored).
func (c *subscriptionConn) unsubscribe(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.channels = slices.DeleteFunc(c.channels, func(ch string) bool { return ch == channel })
	if c.broken != nil || !c.ready {
		return
	}
	var err error
	if c.s.config.Sharded {
		err = c.ps.SUnsubscribe(c.ctx, channel)
	} else {
		err = c.ps.Unsubscribe(c.ctx, channel)
	}
	if err != nil {
		c.broken, c.lastErr = err, err
	}
}

// forget removes a channel Redis refused: it is not subscribed again.
func (c *subscriptionConn) forget(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.channels = slices.DeleteFunc(c.channels, func(ch string) bool { return ch == channel })
}

// replace swaps in a fresh connection and subscribes every channel on it,
// in batches. A batch that cannot be sent leaves it broken, to be replaced
// again after a backoff, and is returned.
func (c *subscriptionConn) replace() error {
	c.mu.Lock()
	old := c.ps
	c.ps, c.sent, c.broken, c.ready = c.newPubSub(), nil, nil, false
	var err error
	for batch := range slices.Chunk(slices.Clone(c.channels), resubscribeBatch) {
		if err = c.send(c.ctx, batch); err != nil {
			break
		}
	}
	c.mu.Unlock()
	_ = old.Close()
	return err
}

// confirmed counts a confirmation against the oldest SUBSCRIBE sent, and
// reports whether every SUBSCRIBE sent is answered now.
func (c *subscriptionConn) confirmed() (all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sent) > 0 {
		c.sent[0].answered++
		if c.sent[0].answered == len(c.sent[0].channels) {
			c.sent = c.sent[1:]
		}
	}
	return len(c.sent) == 0
}

// refused handles an error reply: Redis refused the oldest SUBSCRIBE not
// answered in full. A single channel's is the topic's refusal; a batch's is
// asked again channel by channel, to learn which one Redis refuses.
// It reports whether every SUBSCRIBE sent is answered now.
func (c *subscriptionConn) refused(err error) (all bool) {
	c.mu.Lock()
	if len(c.sent) == 0 {
		c.mu.Unlock()
		c.s.logger.Error("Redis refused a command on a subscription connection", err, nil)
		return true
	}
	cmd := c.sent[0]
	c.sent = c.sent[1:]
	unanswered := cmd.channels[cmd.answered:]
	if len(cmd.channels) == 1 {
		all = len(c.sent) == 0
		c.mu.Unlock()
		c.s.refuse(unanswered[0], err)
		return all
	}
	for _, ch := range unanswered {
		if c.broken != nil || c.send(c.ctx, []string{ch}) != nil {
			break
		}
	}
	all = len(c.sent) == 0
	c.mu.Unlock()
	return all
}

// stale closes ps, which may be on a node that stopped serving its
// channels after since (a primary Sentinel replaced, a master that became
// a replica), so that the read loop reports the loss from since on and
// connects again, where the client points now.
func (c *subscriptionConn) stale(since time.Time, cause error) {
	c.mu.Lock()
	if c.staleSince.IsZero() {
		c.staleSince, c.staleCause = since, cause
	}
	ps := c.ps
	c.mu.Unlock()
	_ = ps.Close()
}

// takeStale returns and clears staleSince and staleCause.
func (c *subscriptionConn) takeStale() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	since, cause := c.staleSince, c.staleCause
	c.staleSince, c.staleCause = time.Time{}, nil
	return since, cause
}

// ownerChanged reports whether the master that owns the slot of a Sharded
// connection's channels, as the client's slot map says now, is another
// than when ps was made.
func (c *subscriptionConn) ownerChanged() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owner == "" || !c.ready {
		return false
	}
	now := c.s.slotOwner(c.channels)
	return now != "" && now != c.owner
}

func (c *subscriptionConn) close() {
	c.cancel()
	_ = c.pubSub().Close()
}

func (c *subscriptionConn) topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.channels)
}

// run reads the connection until close.
func (c *subscriptionConn) run() {
	// replace may have swapped in a connection after close closed the old one.
	defer func() { _ = c.pubSub().Close() }()

	interval := c.s.config.HealthCheckInterval
	lastAlive := time.Now()
	pinged := false
	backoff := minReconnectBackoff
	var lost *LossWindow

	var reported string // the last reconnection error logged
	// restored reports the loss window once every channel is subscribed
	// again (or refused).
	restored := func(lost *LossWindow, at time.Time) {
		lost.To, lost.Topics = at, c.topics()
		c.s.logger.Info("Redis subscription connection restored; messages published in the loss window were not received",
			watermill.LogFields{"topics": lost.Topics, "from": lost.From, "to": lost.To, "window": lost.To.Sub(lost.From).String()})
		c.s.reconnected(*lost)
	}
	// lose reports the loss window opened: the connection was found lost.
	lose := func(w *LossWindow) {
		c.s.disconnected(LossWindow{Topics: c.topics(), From: w.From, Err: w.Err})
	}
	for {
		broken, ready := c.state()
		if broken {
			if !sleep(backoff, c.ctx.Done()) {
				return
			}
			backoff = min(2*backoff, maxReconnectBackoff)
			err := c.replace()
			c.s.reloadSlots(err)
			if err != nil && permanent(err) && err.Error() != reported {
				reported = err.Error()
				c.s.logger.Error("Redis refuses the subscription connection; retrying", err, watermill.LogFields{"topics": c.topics()})
			}
			continue
		}
		if !ready {
			select {
			case <-c.kick:
			case <-c.ctx.Done():
				return
			}
			continue
		}
		ps := c.pubSub()
		received, err := ps.ReceiveTimeout(c.ctx, interval)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			if redirected(err) {
				// SSUBSCRIBE reached a node that does not own the
				// channel's slot (the client's slot map is out of date):
				// subscribe again where the map, read anew, points.
				// Nothing was received here yet, so nothing was lost.
				lastAlive, pinged = time.Now(), false
				c.s.logger.Debug("Shard channel's slot is on another node; following the redirection",
					watermill.LogFields{"topics": c.topics(), "err": err.Error()})
				c.s.reloadSlots(err)
				c.breaks(err)
				continue
			}
			var redisErr redis.Error
			if errors.As(err, &redisErr) && !connectionLevel(err) {
				// An answer, so the connection works: Redis refused a
				// command sent on it.
				lastAlive, pinged = time.Now(), false
				if c.refused(err) && lost != nil {
					restored(lost, lastAlive)
					lost = nil
				}
				continue
			}
			if isTimeout(err) && !pinged {
				// Silence: ask the server for a sign of life. go-redis
				// keeps the connection after a read timeout.
				pinged = true
				_ = ps.Ping(c.ctx)
				continue
			}
			if isTimeout(err) {
				err = errors.New("no answer to a health-check PING within " + interval.String())
			}
			if since, cause := c.takeStale(); !since.IsZero() {
				// The connection worked, but on a node that no longer
				// served its channels: what was published since is lost
				// too.
				err = cause
				from := lastAlive
				if since.Before(from) {
					from = since
				}
				opened := lost == nil
				if lost == nil || from.Before(lost.From) {
					lost = &LossWindow{From: from}
				}
				lost.Err = err
				c.s.logger.Error("The subscription connection is on a node that no longer serves its channels; subscribing again; messages published meanwhile are not received", err,
					watermill.LogFields{"topics": c.topics()})
				if opened {
					lose(lost)
				}
			}
			if lost == nil {
				lost = &LossWindow{From: lastAlive, Err: err}
				c.s.logger.Error("Redis subscription connection lost; messages published until it is back are not received", err,
					watermill.LogFields{"topics": c.topics()})
				lose(lost)
			}
			pinged = false
			c.s.reloadSlots(err) // the node may have failed over
			c.breaks(err)
			continue
		}

		lastAlive = time.Now()
		pinged = false
		backoff = minReconnectBackoff
		reported = ""

		switch m := received.(type) {
		case *redis.Message:
			if t := c.s.route(m.Channel); t != nil {
				t.receive(m.Payload)
			}
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" && c.carries(m.Channel) {
				// Redis dropped the subscription by itself: the shard
				// channel's slot moved to another node (or was removed
				// from this one). This SUNSUBSCRIBE was not asked for: a
				// Sharded Subscriber closes a topic's connection instead.
				if lost == nil {
					lost = &LossWindow{From: lastAlive, Err: errSlotMoved}
					c.s.logger.Error("Redis unsubscribed the shard channel; subscribing again on its slot's owner; messages published until then are not received",
						errSlotMoved, watermill.LogFields{"topics": c.topics()})
					lose(lost)
				}
				c.s.reloadSlots(errSlotMoved)
				c.breaks(errSlotMoved)
				continue
			}
			if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
				continue
			}
			if c.confirmed() && lost != nil {
				restored(lost, lastAlive)
				lost = nil
			}
			if t := c.s.route(m.Channel); t != nil {
				t.confirm()
			}
		}
	}
}

// errSlotMoved is why a shard channel's subscription was dropped by Redis.
var (
	errPrimaryMoved     = errors.New("the primary this subscription connection was made to was replaced by Sentinel")
	errSlotOwnerChanged = errors.New("the master this shard channel's connection was made to no longer owns its slot")
)

var errSlotMoved = errors.New("the shard channel was unsubscribed by Redis: its hash slot moved to another node")

// carries reports whether channel is one this connection must keep
// subscribed.
func (c *subscriptionConn) carries(channel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.channels, channel)
}

// redirected reports a MOVED or ASK reply: the command belongs on another
// node of the cluster.
func redirected(err error) bool {
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask
}

// connectionLevel reports a Redis error that is about the connection, not
// a command: go-redis replaces the connection after it, so it cannot be
// matched to a SUBSCRIBE sent.
func connectionLevel(err error) bool {
	return redirected(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
		redis.IsLoadingError(err) || redis.IsMasterDownError(err)
}

// sleep waits d, or returns false when done is closed first.
func sleep(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}
