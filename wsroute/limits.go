package wsroute

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// keepalive is how serve pings a connection's peer (see
// HandlerConfig.PingInterval).
type keepalive struct {
	interval, timeout time.Duration
	ping              func(context.Context) error // sends a ping and waits for its pong
}

// keepalive pings the peer every interval after the last ping ended, until
// the connection closes, and closes it when a ping goes unanswered for
// timeout while the node was reading the connection all that time. A peer
// that goes silent is thus closed at most interval + timeout later.
//
// Pongs are read by Read (github.com/coder/websocket handles control frames
// inside Read only): while serve waits for Inbound to take a frame, no pong
// can be read, and a ping timing out then says nothing of the client. It
// is not held against it; the next ping asks again.
func (c *localConn) keepalive(k keepalive) {
	// A framed connection also gets a ping frame with every ping, and one
	// at once: a browser answers WebSocket pings without telling the page,
	// so a client that wants to notice a dead path (the JavaScript client
	// does) watches for these frames instead.
	c.pingFrame(k.interval)
	timer := time.NewTimer(k.interval)
	defer timer.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-timer.C:
		}
		c.pingFrame(k.interval)
		sent := monotonic()
		ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
		err := k.ping(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && c.readAllAlongSince(sent) {
			c.node.stats.pingTimeouts.Add(1)
			c.shutdown(StatusPingTimeout, fmt.Sprintf("no pong within %s", k.timeout))
			return
		}
		// Any other error is the connection closing, which Read reports.
		timer.Reset(k.interval)
	}
}

// readAllAlongSince reports whether the Read in progress started before t.
func (c *localConn) readAllAlongSince(t int64) bool {
	since := c.readingSince.Load()
	return since != 0 && since <= t
}

var clockStart = time.Now()

// monotonic is the time since the process started, in nanoseconds, never
// 0 and unaffected by changes of the wall clock.
func monotonic() int64 { return int64(time.Since(clockStart)) + 1 }

// tokenBucket limits a connection's frames to rate a second on average,
// with bursts of up to burst. It is used by the connection's reading
// goroutine only.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newTokenBucket(rate, burst float64, now time.Time) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, tokens: burst, last: now}
}

// allow takes a token if there is one.
func (b *tokenBucket) allow(now time.Time) bool {
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = math.Min(b.burst, b.tokens+elapsed.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// inboundLimit returns a new connection's rate limit, nil without one.
func (n *Node) inboundLimit() *tokenBucket {
	if n.config.InboundRate == 0 {
		return nil
	}
	burst := float64(n.config.InboundBurst)
	if burst == 0 {
		burst = math.Max(1, math.Ceil(n.config.InboundRate)) // one second's worth
	}
	return newTokenBucket(n.config.InboundRate, burst, time.Now())
}

// pingFrame queues a wsroute.v1 ping frame on a framed connection, unless
// its send queue is full: the client is receiving other frames then, which
// tell it as much, and a ping frame is no message to meet the slow-client
// policy (it would count as dropped, or disconnect a client catching up
// from its history).
func (c *localConn) pingFrame(interval time.Duration) {
	if !c.framed {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.queue) >= c.node.config.SendQueueSize {
		return
	}
	c.queueLocked(encodePing(interval), false)
}
