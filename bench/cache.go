package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/redisbus/watermill-redisbus/localcache"
)

// Local caches of Redis data: the read a cache exists for (a hit), and how
// soon a write on one node is seen by another node's reads. The peer is
// rueidis' client-side caching, which Redis itself invalidates (CLIENT
// TRACKING over RESP3); the reference reads Redis every time.
const (
	cLocalCache   = "redisbus localcache"
	cRueidisCache = "rueidis client-side caching"
	cRedisGet     = "go-redis GET, no local cache"

	wCacheHit1   = "cache: hits, 1 goroutine"
	wCacheHit8   = "cache: hits, 8 goroutines"
	wCacheWrite  = "cache: a write seen by another node"
	cacheKeys    = 1000
	cacheValueSz = 64
)

// cacheContender is a way to read Redis data on a node: peer marks a
// compared library (its failures are reported, not fatal), cached one
// whose reads of a key read before must hit.
type cacheContender struct {
	name         string
	peer, cached bool
	open         func(ctx context.Context, e *env, topic string) (*cacheNode, error)
}

// cacheContenders are the local caches compared, in the report's order.
var cacheContenders = []cacheContender{
	{name: cLocalCache, cached: true, open: openLocalCache},
	{name: cRueidisCache, peer: true, cached: true, open: openRueidisCache},
	{name: cRedisGet, open: openRedisGet},
}

// cacheNode is one node's view of the cached data: read returns a key's
// value and whether the node's cache served it; write stores a value in
// Redis and makes every node's cache drop the old one.
type cacheNode struct {
	read  func(ctx context.Context, key string) (value string, hit bool, err error)
	write func(ctx context.Context, key, value string) error
	close func()
}

func openLocalCache(ctx context.Context, e *env, topic string) (*cacheNode, error) {
	client := e.client(false)
	cache, err := localcache.New(localcache.Config[string]{Client: client, Topic: topic}, nil)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	load := func(key string) func(context.Context) (string, error) {
		return func(ctx context.Context) (string, error) { return client.Get(ctx, key).Result() }
	}
	return &cacheNode{
		read: func(ctx context.Context, key string) (string, bool, error) {
			if v, ok := cache.Get(key); ok {
				return v, true, nil
			}
			v, err := cache.GetOrLoad(ctx, key, load(key))
			return v, false, err
		},
		write: func(ctx context.Context, key, value string) error {
			if err := client.Set(ctx, key, value, 0).Err(); err != nil {
				return err
			}
			return cache.Invalidate(ctx, key)
		},
		close: func() {
			_ = cache.Close()
			_ = client.Close()
		},
	}, nil
}

func openRueidisCache(ctx context.Context, e *env, _ string) (*cacheNode, error) {
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{e.opt.Addr}, Username: e.opt.Username, Password: e.opt.Password,
		SelectDB: e.opt.DB, ForceSingleClient: true,
	})
	if err != nil {
		return nil, err
	}
	return &cacheNode{
		read: func(ctx context.Context, key string) (string, bool, error) {
			r := client.DoCache(ctx, client.B().Get().Key(key).Cache(), time.Minute)
			v, err := r.ToString()
			return v, r.IsCacheHit(), err
		},
		write: func(ctx context.Context, key, value string) error {
			return client.Do(ctx, client.B().Set().Key(key).Value(value).Build()).Error()
		},
		close: client.Close,
	}, nil
}

func openRedisGet(ctx context.Context, e *env, _ string) (*cacheNode, error) {
	client := e.client(false)
	return &cacheNode{
		read: func(ctx context.Context, key string) (string, bool, error) {
			v, err := client.Get(ctx, key).Result()
			return v, false, err
		},
		write: func(ctx context.Context, key, value string) error {
			return client.Set(ctx, key, value, 0).Err()
		},
		close: func() { _ = client.Close() },
	}, nil
}

// cacheData stores cacheKeys values of cacheValueSz bytes and returns their
// keys.
func cacheData(ctx context.Context, admin *redis.Client) ([]string, error) {
	prefix := "bench-cache-" + watermill.NewShortUUID() + ":"
	keys := make([]string, cacheKeys)
	pipe := admin.Pipeline()
	for i := range keys {
		keys[i] = fmt.Sprint(prefix, i)
		pipe.Set(ctx, keys[i], cacheValue(i, 0), 10*time.Minute)
	}
	_, err := pipe.Exec(ctx)
	return keys, err
}

// cacheValue is version v of key i's value: cacheValueSz bytes that tell
// both.
func cacheValue(i, v int) string {
	s := fmt.Sprintf("key %d version %d ", i, v)
	return s + strings.Repeat("x", cacheValueSz-len(s))
}

// cacheHits reads every key once (a load) and once more (it must hit), then
// counts, for the run's duration, the reads goroutines make of them in
// turn. A cache's reads must all hit and all return the value.
func cacheHits(ctx context.Context, e *env, c cacheContender, goroutines int, duration time.Duration) (sample, error) {
	workload := wCacheHit1
	if goroutines > 1 {
		workload = wCacheHit8
	}
	s := sample{contender: c.name, family: "cache", workload: workload, size: cacheValueSz, peer: c.peer}
	keys, err := cacheData(ctx, e.admin)
	if err != nil {
		return s, err
	}
	defer e.admin.Del(context.WithoutCancel(ctx), keys...)
	node, err := c.open(ctx, e, "bench-cache-"+watermill.NewShortUUID())
	if err != nil {
		return s, err
	}
	defer node.close()
	for pass := range 2 {
		for i, key := range keys {
			v, hit, err := node.read(ctx, key)
			if err != nil {
				return s, err
			}
			if v != cacheValue(i, 0) {
				return s, fmt.Errorf("read %q for %s", v, key)
			}
			if pass == 1 && c.cached && !hit {
				return s, fmt.Errorf("%s missed after it was read", key)
			}
		}
	}

	var stop atomic.Bool
	reads := make([]int64, goroutines)
	misses := make([]int64, goroutines)
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	began := time.Now()
	time.AfterFunc(duration, func() { stop.Store(true) })
	for g := range goroutines {
		wg.Go(func() {
			i := g * cacheKeys / goroutines
			for !stop.Load() {
				for range 256 { // the stop flag is read once per 256 reads
					v, hit, err := node.read(ctx, keys[i])
					if err != nil || len(v) != cacheValueSz {
						errs <- fmt.Errorf("read %s: %q, %v", keys[i], v, err)
						return
					}
					if !hit {
						misses[g]++
					}
					reads[g]++
					if i++; i == cacheKeys {
						i = 0
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(errs)
	if err := <-errs; err != nil {
		return s, err
	}
	var total, missed int64
	for g := range goroutines {
		total, missed = total+reads[g], missed+misses[g]
	}
	s.subRate = float64(total) / elapsed.Seconds()
	if c.cached && missed > 0 {
		return s, fmt.Errorf("%d of %d reads of cached keys missed", missed, total)
	}
	return s, nil
}

// cacheWrites measures, n times, how long after a write begins on node a
// node b's reads return the new value: b reads the key until it does, as a
// busy server would.
func cacheWrites(ctx context.Context, e *env, c cacheContender, n int) (sample, error) {
	s := sample{contender: c.name, family: "cache", workload: wCacheWrite, size: cacheValueSz, peer: c.peer}
	keys, err := cacheData(ctx, e.admin)
	if err != nil {
		return s, err
	}
	defer e.admin.Del(context.WithoutCancel(ctx), keys...)
	topic := "bench-cache-" + watermill.NewShortUUID()
	a, err := c.open(ctx, e, topic)
	if err != nil {
		return s, err
	}
	defer a.close()
	b, err := c.open(ctx, e, topic)
	if err != nil {
		return s, err
	}
	defer b.close()

	log := &latencyLog{}
	for j := range n {
		i := j % cacheKeys
		version := j/cacheKeys + 1
		old, want := cacheValue(i, version-1), cacheValue(i, version)
		for pass := range 2 { // cached on b
			v, hit, err := b.read(ctx, keys[i])
			if err != nil || v != old {
				return s, fmt.Errorf("read %s before the write: %q, %v", keys[i], v, err)
			}
			if pass == 1 && c.cached && !hit {
				return s, fmt.Errorf("%s missed after it was read", keys[i])
			}
		}
		began := time.Now()
		if err := a.write(ctx, keys[i], want); err != nil {
			return s, err
		}
		for {
			v, _, err := b.read(ctx, keys[i])
			if err != nil {
				return s, err
			}
			if v == want {
				break
			}
			if v != old {
				return s, fmt.Errorf("read %q for %s, neither the old value nor the new", v, keys[i])
			}
			if time.Since(began) > 5*time.Second {
				return s, fmt.Errorf("node b still reads the old value of %s 5 s after the write", keys[i])
			}
			runtime.Gosched()
		}
		log.add(time.Since(began))
	}
	s.p50, s.p99, s.p999, err = log.percentiles()
	return s, err
}

// runCaches runs the cache workloads of the contenders -only selects.
func runCaches(ctx context.Context, e *env, o options, record func(sample, error)) {
	duration, writes := cacheRun(o)
	for _, c := range cacheContenders {
		if !selected(c.name, o.only) {
			continue
		}
		record(cacheHits(ctx, e, c, 1, duration))
		record(cacheHits(ctx, e, c, 8, duration))
		record(cacheWrites(ctx, e, c, writes))
	}
}

// cacheSection reports the cache workloads.
func (r *report) cacheSection(b *strings.Builder) {
	if !r.ran(cLocalCache) {
		return
	}
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	duration, writes := cacheRun(r.o)
	w("\n## Local caches: the hit path\n\n")
	w("%d keys of %d B in Redis, each read once into the cache (a load) and once more (a hit), then read in turn for %s by 1 and by 8 goroutines: every read of a cache must hit and return the value, or the run fails. ", cacheKeys, cacheValueSz, duration)
	w("`localcache` reads with `Get` (and `GetOrLoad` from Redis on a miss); rueidis with `DoCache(GET, 1 min)`, its client-side cache that Redis invalidates itself (`CLIENT TRACKING`, RESP3); the reference is a go-redis `GET`, every read a round trip. ")
	w("A write seen by another node: node a writes a cached key (`SET`, then `Invalidate` for `localcache`; rueidis' `SET` alone, Redis tells the trackers), node b reads it in a loop until it returns the new value; the time from the start of the write, %d writes per round. Medians of the rounds.\n\n", writes)
	w("| Contender | Hits/s, 1 goroutine | ns per hit | Hits/s, 8 goroutines | Write seen p50 | p99 | p99.9 |\n|---|---|---|---|---|---|---|\n")
	for _, c := range cacheContenders {
		one, ok := r.stat(wCacheHit1, cacheValueSz, c.name, sub)
		if !ok {
			continue
		}
		eight, _ := r.stat(wCacheHit8, cacheValueSz, c.name, sub)
		a, _ := r.stat(wCacheWrite, cacheValueSz, c.name, p50)
		z, _ := r.stat(wCacheWrite, cacheValueSz, c.name, p99)
		y, _ := r.stat(wCacheWrite, cacheValueSz, c.name, func(s sample) float64 { return float64(s.p999) })
		name := c.name
		if !c.cached {
			name += " (reads: not hits)"
		}
		w("| %s | %s | %.0f | %s | %s | %s | %s |\n", name, one.rate(), 1e9/one.median, eight.rate(), dur(a.median), dur(z.median), dur(y.median))
	}
	mine, ok1 := r.stat(wCacheHit8, cacheValueSz, cLocalCache, sub)
	peer, ok2 := r.stat(wCacheHit8, cacheValueSz, cRueidisCache, sub)
	get, ok3 := r.stat(wCacheHit8, cacheValueSz, cRedisGet, sub)
	if ok1 && ok2 && ok3 {
		w("\nWith 8 goroutines `localcache` serves %.1f× the hits of rueidis' client-side cache and %.0f× the reads of a `GET` in this run.\n", mine.median/peer.median, mine.median/get.median)
	}
}

// cacheRun is how long each hit run reads, and how many writes a write run
// makes.
func cacheRun(o options) (time.Duration, int) {
	if o.quick {
		return 200 * time.Millisecond, 100
	}
	return time.Second, 1000
}
