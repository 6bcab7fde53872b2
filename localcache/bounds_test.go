package localcache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Every combination of small bounds and TTLs, under a random mix of
// reads, writes and invalidations of each kind on two nodes: reads after a
// Sync return exactly what the database holds, and the bounds hold after
// every step.
func TestBoundsAndTTLSweep(t *testing.T) {
	for _, maxEntries := range []int{1, 3, 50} {
		for _, maxBytes := range []int{-1, 350} {
			for _, ttl := range []time.Duration{-1, time.Nanosecond, time.Minute} {
				t.Run(fmt.Sprintf("entries=%d,bytes=%d,ttl=%s", maxEntries, maxBytes, ttl), func(t *testing.T) {
					sweep(t, localcache.Config[int64]{MaxEntries: maxEntries, MaxBytes: maxBytes, TTL: ttl, Tags: keyTag})
				})
			}
		}
	}
}

func sweep(t *testing.T, config localcache.Config[int64]) {
	d := newDB(t)
	caches := nodes(t, 2, config)
	rng := rand.New(rand.NewPCG(1, uint64(config.MaxEntries)))
	keys := []string{"a:1", "a:2", "a:3", "b:1", "b:2", "c:1"}
	for step := range 300 {
		c := caches[rng.IntN(2)]
		key := keys[rng.IntN(len(keys))]
		switch op := rng.IntN(10); {
		case op < 6:
			syncAll(t, c)
			want, err := d.read(context.Background(), key)
			require.NoError(t, err)
			require.Equal(t, want, getOrLoad(t, c, d, key), "step %d: %s", step, key)
		default:
			d.write(t, key)
			var err error
			switch op {
			case 6:
				err = c.Invalidate(t.Context(), key)
			case 7:
				err = c.InvalidatePrefix(t.Context(), key[:2])
			case 8:
				err = c.InvalidateTag(t.Context(), "t:"+key)
			case 9:
				err = c.InvalidateAll(t.Context())
			}
			require.NoError(t, err)
		}
		for _, c := range caches {
			s := c.Stats()
			require.LessOrEqual(t, s.Entries, config.MaxEntries)
			if config.MaxBytes > 0 {
				require.LessOrEqual(t, s.Bytes, config.MaxBytes)
			}
			if config.TTL == time.Nanosecond {
				require.Zero(t, s.Hits, "every entry expires at once")
			}
		}
	}
	s := caches[0].Stats()
	if config.TTL != time.Nanosecond && config.MaxEntries > 1 {
		assert.NotZero(t, s.Hits, "the cache serves hits")
	}
	if config.MaxEntries < len(keys) && config.TTL != time.Nanosecond {
		assert.NotZero(t, s.Evicted, "the bounds evict")
	}
}

// What an attacker controls (keys, tags, invalidations on the topic)
// costs no more than the bounds: keys and tags over MaxKeyBytes are never
// stored, nor is a value with too many tags; an invalidation over
// MaxKeyBytes is ignored; a message that is no invalidation clears the
// cache, since it cannot be vouched for, and is counted.
func TestHostileInputCostsAreBounded(t *testing.T) {
	topic := pubsubtest.Topic(t)
	tags := func(key string, _ int64) []string {
		if strings.HasPrefix(key, "many:") {
			out := make([]string, 1000)
			for i := range out {
				out[i] = fmt.Sprint("tag:", i)
			}
			return out
		}
		if strings.HasPrefix(key, "long:") {
			return []string{strings.Repeat("t", 2000)}
		}
		return nil
	}
	config := localcache.Config[int64]{Topic: topic, MaxKeyBytes: 100, MaxTags: 8, MaxBytes: 10_000, Tags: tags}
	c := newCache(t, config)
	other := newCache(t, config)

	huge := strings.Repeat("k", 1<<20)
	assert.Equal(t, int64(1), mustLoad(t, c, huge, 1))
	assert.Equal(t, int64(2), mustLoad(t, c, huge, 2), "never stored")
	_, hit := c.Get(huge)
	assert.False(t, hit)
	assert.Equal(t, int64(3), mustLoad(t, c, "many:1", 3))
	assert.Equal(t, int64(4), mustLoad(t, c, "long:1", 4))
	assert.Zero(t, c.Len())
	s := c.Stats()
	assert.Equal(t, uint64(2), s.Bypassed, "the huge key")
	assert.Equal(t, uint64(2), s.Skipped, "too many tags, a tag too long")

	// Many distinct keys at the size limit: the byte bound holds.
	for i := range 1000 {
		mustLoad(t, c, fmt.Sprintf("%099d", i), int64(i))
		require.LessOrEqual(t, c.Stats().Bytes, 10_000)
	}
	held := c.Len()
	assert.Positive(t, held)

	// Invalidations longer than MaxKeyBytes match nothing: ignored.
	require.NoError(t, other.Invalidate(t.Context(), huge))
	require.NoError(t, other.InvalidateTag(t.Context(), huge))
	require.NoError(t, other.InvalidatePrefix(t.Context(), huge))
	syncAll(t, c)
	assert.Equal(t, held, c.Len())

	// A plain PUBLISH of anything else clears every node's cache.
	raw := pubsubtest.NewClient(t)
	require.NoError(t, raw.Publish(t.Context(), topic, "drop table products").Err())
	syncAll(t, c)
	assert.Zero(t, c.Len())
	s = c.Stats()
	assert.Equal(t, uint64(1), s.Unreadable)
	assert.Equal(t, uint64(1), s.Losses)
	assert.True(t, s.Up)

	// And a plain PUBLISH in the wire format invalidates, from any client.
	mustLoad(t, c, "product:42", 1)
	require.NoError(t, raw.Publish(t.Context(), topic, "key:product:42").Err())
	syncAll(t, c)
	_, hit = c.Get("product:42")
	assert.False(t, hit)
}
