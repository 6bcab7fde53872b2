package localcache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// waitTimeout bounds every wait for something that should happen at once
// on loopback; it is only reached when the code under test is broken.
const waitTimeout = 10 * time.Second

// db is the source of truth the caches load from: a version per key, in
// Redis, read through a client of its own (never through a test's proxy).
type db struct {
	client *redis.Client
	prefix string
	loads  atomic.Int64
}

// newDB returns a database of keys of the test's own, deleted when it
// ends: the tests may run against a Redis of yours (REDIS_URL).
func newDB(t *testing.T) *db {
	d := &db{client: pubsubtest.NewClient(t), prefix: "localcache-test:" + watermill.NewShortUUID() + ":"}
	t.Cleanup(func() {
		keys, err := d.client.Keys(context.Background(), d.prefix+"*").Result()
		if assert.NoError(t, err) && len(keys) > 0 {
			assert.NoError(t, d.client.Del(context.Background(), keys...).Err())
		}
	})
	return d
}

// write stores a new version of key and returns it.
func (d *db) write(t *testing.T, key string) int64 {
	t.Helper()
	v, err := d.client.Incr(context.Background(), d.prefix+key).Result()
	require.NoError(t, err)
	return v
}

// read returns key's version, 0 if it has none.
func (d *db) read(ctx context.Context, key string) (int64, error) {
	v, err := d.client.Get(ctx, d.prefix+key).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

// loader returns a loader of key that counts its calls.
func (d *db) loader(key string) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		d.loads.Add(1)
		return d.read(ctx, key)
	}
}

// gatedLoader returns a loader that reads key, says so on read, and
// returns only when release is closed: a load that the test holds between
// its read of the database and its return.
func (d *db) gatedLoader(key string, read chan<- int64, release <-chan struct{}) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		d.loads.Add(1)
		v, err := d.read(ctx, key)
		read <- v
		<-release
		return v, err
	}
}

// heldLoad is a GetOrLoad whose loader the test holds between its read of
// the database and its return.
type heldLoad struct {
	read    int64 // what the loader read
	release chan struct{}
	result  chan int64
}

// startHeldLoad starts a GetOrLoad of key on c and returns once its loader
// read the database.
func startHeldLoad(t *testing.T, c *localcache.Cache[int64], d *db, key string) *heldLoad {
	t.Helper()
	h := &heldLoad{release: make(chan struct{}), result: make(chan int64, 1)}
	read := make(chan int64, 1)
	go func() {
		v, err := c.GetOrLoad(context.Background(), key, d.gatedLoader(key, read, h.release))
		assert.NoError(t, err)
		h.result <- v
	}()
	h.read = <-read
	return h
}

// finish lets the loader return, and returns what GetOrLoad returned.
func (h *heldLoad) finish() int64 {
	close(h.release)
	return <-h.result
}

// newCache returns a cache closed when t ends. A nil Client means the
// tests' Redis; an empty Topic one of the test's own.
func newCache(t *testing.T, config localcache.Config[int64]) *localcache.Cache[int64] {
	t.Helper()
	if config.Client == nil {
		config.Client = pubsubtest.NewClient(t)
	}
	if config.Topic == "" {
		config.Topic = pubsubtest.Topic(t)
	}
	c, err := localcache.New(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// nodes returns n caches sharing one topic.
func nodes(t *testing.T, n int, config localcache.Config[int64]) []*localcache.Cache[int64] {
	t.Helper()
	if config.Topic == "" {
		config.Topic = pubsubtest.Topic(t)
	}
	out := make([]*localcache.Cache[int64], n)
	for i := range out {
		out[i] = newCache(t, config)
	}
	return out
}

// syncAll waits until every cache applied what was published so far.
func syncAll(t *testing.T, caches ...*localcache.Cache[int64]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, c := range caches {
		require.NoError(t, c.Sync(ctx))
	}
}

// getOrLoad is GetOrLoad with d's loader, failing the test on error.
func getOrLoad(t *testing.T, c *localcache.Cache[int64], d *db, key string) int64 {
	t.Helper()
	v, err := c.GetOrLoad(context.Background(), key, d.loader(key))
	require.NoError(t, err)
	return v
}

// proxiedClient returns a client of the tests' Redis through a proxy the
// test can cut, with timeouts short enough that it gives up a frozen
// connection, and reconnects once the proxy lets it, promptly.
func proxiedClient(t *testing.T, timeout time.Duration) (*redis.Client, *pubsubtest.Proxy) {
	t.Helper()
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout})
	t.Cleanup(func() { _ = client.Close() })
	return client, proxy
}

// eventually waits for cond, checked every millisecond.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, waitTimeout, time.Millisecond, what)
}

// keyTag tags an entry by its key, through Config.Tags.
func keyTag(key string, _ int64) []string { return []string{"t:" + key} }
