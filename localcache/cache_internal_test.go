package localcache

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func newInternalCache(t *testing.T, config Config[string]) *Cache[string] {
	t.Helper()
	if config.Client == nil {
		config.Client = pubsubtest.NewClient(t)
	}
	config.Topic = pubsubtest.Topic(t)
	c, err := New(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// fakeClock makes c's entries expire on a clock the test moves.
func fakeClock(c *Cache[string]) *atomic.Int64 {
	var now atomic.Int64
	c.mu.Lock()
	c.now = func() time.Duration { return time.Duration(now.Load()) }
	c.mu.Unlock()
	return &now
}

func load(t *testing.T, c *Cache[string], key, value string) string {
	t.Helper()
	v, err := c.GetOrLoad(context.Background(), key, func(context.Context) (string, error) { return value, nil })
	require.NoError(t, err)
	return v
}

func TestEntriesExpireAfterTheirTTL(t *testing.T) {
	c := newInternalCache(t, Config[string]{TTL: time.Minute})
	now := fakeClock(c)
	assert.Equal(t, "a1", load(t, c, "a", "a1"))
	now.Store(int64(30 * time.Second))
	assert.Equal(t, "a1", load(t, c, "a", "a2"), "within its TTL")
	load(t, c, "b", "b1") // stored at 30 s
	now.Store(int64(time.Minute))
	_, hit := c.Get("a")
	assert.False(t, hit, "expired")
	assert.Equal(t, "b1", load(t, c, "b", "b2"))
	assert.Equal(t, "a2", load(t, c, "a", "a2"), "loaded again")
	assert.Equal(t, uint64(1), c.Stats().Expired)

	forever := newInternalCache(t, Config[string]{TTL: -1})
	now = fakeClock(forever)
	load(t, forever, "a", "a1")
	now.Store(int64(1000 * time.Hour))
	assert.Equal(t, "a1", load(t, forever, "a", "a2"), "no TTL")

	centuries := newInternalCache(t, Config[string]{TTL: never - 1})
	now = fakeClock(centuries)
	now.Store(int64(time.Hour))
	load(t, centuries, "a", "a1")
	assert.Equal(t, "a1", load(t, centuries, "a", "a2"), "a TTL past the clock's end does not wrap around")
}

// An inbox that overflows drops messages, which may be invalidations: the
// cache clears. Here its consumer is held (the cache's lock) while more
// messages come than the inbox holds.
func TestAnInboxOverflowClearsTheCache(t *testing.T) {
	client := pubsubtest.NewClient(t)
	c := newInternalCache(t, Config[string]{Client: client})
	load(t, c, "a", "a1")
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()

	c.mu.Lock()
	const inbox = 10_000 // SubscriberConfig.InboxSize's default
	msgs := make([]*message.Message, inbox+100)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("key:other"))
	}
	require.NoError(t, pub.Publish(c.config.Topic, msgs...))
	require.Eventually(t, func() bool { return c.sub.Stats().Received == uint64(len(msgs)) }, 10*time.Second, time.Millisecond)
	require.NotZero(t, c.sub.Stats().Dropped)
	c.mu.Unlock()

	require.Eventually(t, func() bool { return c.Stats().Losses > 0 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, uint64(1), c.Stats().Losses, "one loss, however many were dropped")
	_, hit := c.Get("a")
	assert.False(t, hit)
	assert.True(t, c.Stats().Up, "the subscription itself is fine")
	assert.Equal(t, "a2", load(t, c, "a", "a2"))
	assert.Equal(t, "a2", load(t, c, "a", "a3"), "caching goes on")
}
