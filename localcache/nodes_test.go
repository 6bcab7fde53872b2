package localcache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Three nodes, as three servers of one service, while writers on every
// node change records and invalidate them (by key, prefix, tag or all) and
// readers on every node read them; one node's connection to Redis is cut
// silently twice along the way. Each reader notes the newest version whose
// invalidation was published (Invalidate returned), calls Sync and reads:
// it must never get an older version, whether from a hit, a shared load or
// its own. At the end every node reads exactly what the database holds.
func TestNodesNeverReadOlderThanWhatTheyCouldHaveKnown(t *testing.T) {
	d := newDB(t)
	config := localcache.Config[int64]{Topic: pubsubtest.Topic(t), Tags: keyTag, HealthCheckInterval: 100 * time.Millisecond, MaxEntries: 6}
	caches := nodes(t, 2, config)
	client, proxy := proxiedClient(t, time.Second)
	config.Client = client
	caches = append(caches, newCache(t, config))
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = fmt.Sprintf("r%02d", i)
	}

	var mu sync.Mutex
	published := map[string]int64{} // newest version whose invalidation Redis accepted

	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		writers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 150 {
				c, key := caches[rng.IntN(2)], keys[rng.IntN(len(keys))] // the cut node's publishes could stall
				version := d.write(t, key)
				var err error
				switch rng.IntN(8) {
				case 0:
					err = c.InvalidatePrefix(ctx, key[:2]) // r0*: half the records
				case 1:
					err = c.InvalidateTag(ctx, "t:"+key)
				case 2:
					if rng.IntN(4) == 0 {
						err = c.InvalidateAll(ctx)
					} else {
						err = c.Invalidate(ctx, key)
					}
				default:
					err = c.Invalidate(ctx, key)
				}
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				published[key] = max(published[key], version)
				mu.Unlock()
			}
		})
	}
	var reads, stale sync.Map
	for r := range 6 {
		c := caches[r%3]
		readers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 2))
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[rng.IntN(len(keys))]
				mu.Lock()
				known := published[key]
				mu.Unlock()
				if rng.IntN(2) == 1 || c.Sync(ctx) != nil {
					// A read without Sync, or one whose Sync failed (the
					// cut node's marker on a frozen connection): only the
					// final check covers it.
					known = 0
				}
				got, err := c.GetOrLoad(ctx, key, d.loader(key))
				if !assert.NoError(t, err) {
					return
				}
				n, _ := reads.LoadOrStore(r, new(int))
				*n.(*int)++
				if got < known {
					stale.Store(fmt.Sprintf("node %d read %s = %d after %d was invalidated", r%3, key, got, known), true)
				}
			}
		})
	}

	// Cut the third node twice while all this runs; it finds out, clears,
	// reconnects.
	for cut := range 2 {
		eventually(t, func() bool { return caches[2].Stats().Hits > uint64(10*(cut+1)) }, "the third node serves hits")
		proxy.FreezeOpenConnections()
		eventually(t, func() bool { s := caches[2].Stats(); return s.Losses == uint64(cut+1) && s.Up }, "the cut found, the node back")
	}
	writers.Wait()
	close(stop)
	readers.Wait()

	stale.Range(func(k, _ any) bool {
		t.Error(k)
		return true
	})
	reads.Range(func(r, n any) bool {
		assert.Positive(t, *n.(*int), "reader %d read", r)
		return true
	})
	// The cut node's pool may still hold connections the cuts froze: each
	// fails once (a read timeout) and is replaced, so its Sync may fail a
	// few times before one goes through, as a caller retrying would see.
	eventually(t, func() bool { return caches[2].Sync(ctx) == nil }, "the cut node syncs on a live connection")
	syncAll(t, caches...)
	for i, c := range caches {
		for _, key := range keys {
			want, err := d.read(ctx, key)
			require.NoError(t, err)
			assert.Equal(t, want, getOrLoad(t, c, d, key), "node %d, %s", i, key)
		}
		s := c.Stats()
		t.Logf("node %d: %+v", i, s)
		assert.NotZero(t, s.Hits)
	}
}
