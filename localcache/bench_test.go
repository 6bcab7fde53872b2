package localcache_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// benchCache returns a cache of 10,000 entries, "key:0" to "key:9999".
func benchCache(b *testing.B) *localcache.Cache[[]byte] {
	b.Helper()
	c, err := localcache.New(localcache.Config[[]byte]{
		Client: pubsubtest.NewClient(b),
		Topic:  "localcache-bench:" + watermill.NewShortUUID(),
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	value := make([]byte, 64)
	for i := range 10_000 {
		if _, err := c.GetOrLoad(context.Background(), "key:"+strconv.Itoa(i), func(context.Context) ([]byte, error) { return value, nil }); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// The hit path: Get of a present key.
func BenchmarkGetHit(b *testing.B) {
	c := benchCache(b)
	for b.Loop() {
		if _, ok := c.Get("key:42"); !ok {
			b.Fatal("miss")
		}
	}
}

// The hit path of GetOrLoad, which is Get's.
func BenchmarkGetOrLoadHit(b *testing.B) {
	c := benchCache(b)
	ctx := context.Background()
	load := func(context.Context) ([]byte, error) { panic("a hit must not load") }
	for b.Loop() {
		if _, err := c.GetOrLoad(ctx, "key:42", load); err != nil {
			b.Fatal(err)
		}
	}
}

// Hits from every P at once, over the 10,000 keys: what the read lock and
// the counters cost when readers share them.
func BenchmarkGetHitParallel(b *testing.B) {
	c := benchCache(b)
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := c.Get(keys[i%len(keys)]); !ok {
				b.Fatal("miss")
			}
			i += 7
		}
	})
}
