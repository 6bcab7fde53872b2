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
// go-redis reconnects and resubscribes by itself after a network error; this
// loop adds the health check for connections that die silently and makes
// the loss window visible.
type subscriptionConn struct {
	s      *Subscriber
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex // guards ps and channels against the read loop's replace
	ps       *redis.PubSub
	channels []string
}

func newSubscriptionConn(s *Subscriber) *subscriptionConn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &subscriptionConn{s: s, ctx: ctx, cancel: cancel}
	c.ps = c.newPubSub()
	return c
}

func (c *subscriptionConn) newPubSub() *redis.PubSub {
	if c.s.config.Sharded {
		return c.s.config.Client.SSubscribe(c.ctx, c.channels...)
	}
	return c.s.config.Client.Subscribe(c.ctx, c.channels...)
}

// subscribe sends SUBSCRIBE for topic; the read loop sees the confirmation.
func (c *subscriptionConn) subscribe(ctx context.Context, topic string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.channels = append(c.channels, topic)
	if c.s.config.Sharded {
		return c.ps.SSubscribe(ctx, topic)
	}
	return c.ps.Subscribe(ctx, topic)
}

func (c *subscriptionConn) pubSub() *redis.PubSub {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ps
}

// replace swaps in a fresh connection that subscribes to every channel, for
// when the current one stopped answering without an error.
func (c *subscriptionConn) replace() {
	c.mu.Lock()
	old := c.ps
	c.ps = c.newPubSub()
	c.mu.Unlock()
	_ = old.Close()
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

	for {
		ps := c.pubSub()
		received, err := ps.ReceiveTimeout(c.ctx, interval)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			if isTimeout(err) && !pinged {
				// Silence: ask the server for a sign of life. go-redis
				// keeps the connection after a read timeout.
				pinged = true
				_ = ps.Ping(c.ctx)
				continue
			}
			if isTimeout(err) {
				err = errors.New("no answer to a health-check PING within " + interval.String())
				c.replace()
			}
			if lost == nil {
				lost = &LossWindow{From: lastAlive, Err: err}
				c.s.logger.Error("Redis subscription connection lost; messages published until it is back are not received", err,
					watermill.LogFields{"topics": c.topics()})
			}
			pinged = false
			if !sleep(backoff, c.ctx.Done()) {
				return
			}
			backoff = min(2*backoff, maxReconnectBackoff)
			continue
		}

		lastAlive = time.Now()
		pinged = false
		backoff = minReconnectBackoff

		switch m := received.(type) {
		case *redis.Message:
			if t := c.s.route(m.Channel); t != nil {
				t.receive(m.Payload)
			}
		case *redis.Subscription:
			if lost != nil {
				// go-redis resubscribes every channel in one command when it
				// reconnects: the first confirmation means all are back.
				lost.To, lost.Topics = lastAlive, c.topics()
				c.s.logger.Info("Redis subscription connection restored; messages published in the loss window were not received",
					watermill.LogFields{"topics": lost.Topics, "from": lost.From, "to": lost.To, "window": lost.To.Sub(lost.From).String()})
				c.s.reconnected(*lost)
				lost = nil
			}
			if t := c.s.route(m.Channel); t != nil {
				t.confirm()
			}
		}
	}
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
