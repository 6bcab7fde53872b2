package wsroute

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The bucket lets a burst through at once, then rate a second, and never
// saves up more than the burst.
func TestTokenBucket(t *testing.T) {
	start := time.Unix(1000, 0)
	b := newTokenBucket(2, 3, start) // 2 frames a second, bursts of 3
	for range 3 {
		assert.True(t, b.allow(start))
	}
	assert.False(t, b.allow(start), "the burst is spent")
	assert.False(t, b.allow(start.Add(250*time.Millisecond)), "half a frame is not one")
	assert.True(t, b.allow(start.Add(500*time.Millisecond)), "half a second at 2/s is one frame")
	assert.False(t, b.allow(start.Add(500*time.Millisecond)))

	later := start.Add(time.Hour)
	for range 3 {
		assert.True(t, b.allow(later))
	}
	assert.False(t, b.allow(later), "an hour idle saves up the burst, no more")
	assert.False(t, b.allow(later.Add(-time.Second)), "a clock going back gives nothing")
}

// A ping frame finds a send queue full of messages (a client catching up
// from its history, a slow one): it is left out, and neither counts as a
// dropped message nor disconnects the client, whatever the policy.
func TestPingFrameIntoAFullQueue(t *testing.T) {
	for _, policy := range []SlowClientPolicy{DropOldest, Disconnect} {
		n := &Node{config: Config{SendQueueSize: 2, SlowClient: policy}}
		c := &localConn{node: n, framed: true, wake: make(chan struct{}, 1)}
		c.queue = []queued{{data: []byte("kept"), kept: true}, {data: []byte("live")}}
		c.pingFrame(time.Second)
		assert.Len(t, c.queue, 2, "policy %d", policy)
		assert.Equal(t, "live", string(c.queue[1].data), "policy %d: nothing displaced", policy)
		assert.Zero(t, n.stats.dropped.Load(), "policy %d", policy)

		c.queue = c.queue[:1]
		c.pingFrame(time.Second)
		assert.Len(t, c.queue, 2, "policy %d: queued when there is room", policy)
	}
}
