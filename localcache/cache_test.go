package localcache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestAnInvalidationReachesEveryNodeAndTheSenderAtOnce(t *testing.T) {
	d := newDB(t)
	caches := nodes(t, 3, localcache.Config[int64]{})
	d.write(t, "k")
	for _, c := range caches {
		assert.Equal(t, int64(1), getOrLoad(t, c, d, "k"))
		assert.Equal(t, int64(1), getOrLoad(t, c, d, "k"))
	}
	assert.Equal(t, int64(3), d.loads.Load(), "one load per node, then hits")

	d.write(t, "k")
	require.NoError(t, caches[0].Invalidate(t.Context(), "k"))
	_, hit := caches[0].Get("k")
	assert.False(t, hit, "the sender drops its copy before Invalidate returns")
	syncAll(t, caches...)
	for _, c := range caches {
		_, hit := c.Get("k")
		assert.False(t, hit)
		assert.Equal(t, int64(2), getOrLoad(t, c, d, "k"))
	}
	assert.Equal(t, uint64(1), caches[1].Stats().Invalidations)
	assert.Equal(t, uint64(1), caches[0].Stats().Invalidations, "the sender skips its own echo")
}

func TestPrefixTagAndAllInvalidations(t *testing.T) {
	// Tags come from the value: a key's group is known only once loaded.
	group := func(_ string, v int64) []string { return []string{fmt.Sprintf("group:%d", v/100)} }
	caches := nodes(t, 2, localcache.Config[int64]{Tags: group})
	reader, writer := caches[0], caches[1]
	load := func(key string, v int64) {
		_, err := reader.GetOrLoad(t.Context(), key, func(context.Context) (int64, error) { return v, nil })
		require.NoError(t, err)
	}
	cached := func() []string {
		var keys []string
		for _, key := range []string{"product:1", "product:2", "order:1", "order:2"} {
			if _, ok := reader.Get(key); ok {
				keys = append(keys, key)
			}
		}
		return keys
	}
	fill := func() {
		load("product:1", 101)
		load("product:2", 201)
		load("order:1", 102)
		load("order:2", 202)
	}

	fill()
	require.NoError(t, writer.InvalidateTag(t.Context(), "group:1"))
	syncAll(t, reader)
	assert.Equal(t, []string{"product:2", "order:2"}, cached())

	fill()
	require.NoError(t, writer.InvalidatePrefix(t.Context(), "product:"))
	syncAll(t, reader)
	assert.Equal(t, []string{"order:1", "order:2"}, cached())

	fill()
	require.NoError(t, writer.InvalidateAll(t.Context()))
	syncAll(t, reader)
	assert.Empty(t, cached())

	fill()
	require.NoError(t, writer.Invalidate(t.Context(), "order:1", "product:1"))
	syncAll(t, reader)
	assert.Equal(t, []string{"product:2", "order:2"}, cached())
}

// racedLoad sets up the classic race on two nodes: the reader's load of
// "k" has read version 1, and is held while the writer stores version 2
// and invalidates; it returns once the reader applied the invalidation.
func racedLoad(t *testing.T, invalidate func(ctx context.Context, c *localcache.Cache[int64]) error) (*db, *localcache.Cache[int64], *heldLoad) {
	t.Helper()
	d := newDB(t)
	caches := nodes(t, 2, localcache.Config[int64]{Tags: keyTag})
	reader, writer := caches[0], caches[1]
	d.write(t, "k")
	held := startHeldLoad(t, reader, d, "k")
	require.Equal(t, int64(1), held.read)
	d.write(t, "k")
	require.NoError(t, invalidate(t.Context(), writer))
	syncAll(t, reader)
	return d, reader, held
}

// The classic race: a node reads the old value, another writes and
// invalidates, then the first stores what it read. Whatever the
// invalidation covers the load by (its key, a prefix, a tag known only
// from the value, all), the value is returned to its caller, which asked
// before the change was known, and not stored.
func TestALoadRacingAnInvalidationIsNotStored(t *testing.T) {
	for name, invalidate := range map[string]func(ctx context.Context, c *localcache.Cache[int64]) error{
		"key":    func(ctx context.Context, c *localcache.Cache[int64]) error { return c.Invalidate(ctx, "k") },
		"prefix": func(ctx context.Context, c *localcache.Cache[int64]) error { return c.InvalidatePrefix(ctx, "k") },
		"tag":    func(ctx context.Context, c *localcache.Cache[int64]) error { return c.InvalidateTag(ctx, "t:k") },
		"all":    func(ctx context.Context, c *localcache.Cache[int64]) error { return c.InvalidateAll(ctx) },
	} {
		t.Run(name, func(t *testing.T) {
			d, reader, held := racedLoad(t, invalidate)
			assert.Equal(t, int64(1), held.finish())
			assert.Equal(t, uint64(1), reader.Stats().Discarded)

			_, hit := reader.Get("k")
			assert.False(t, hit, "the old value was not stored")
			assert.Equal(t, int64(2), getOrLoad(t, reader, d, "k"))
			assert.Equal(t, int64(2), getOrLoad(t, reader, d, "k"))
			assert.Equal(t, int64(2), d.loads.Load(), "the new value is stored")
		})
	}
}

// A call that comes after an invalidation that covers the load in progress
// never gets that load's value. An invalidation by key (or prefix, or all)
// takes the load out of the way at once: the call loads for itself without
// waiting. One by tag cannot (the load's tags are not known yet): the call
// waits for the load, and then loads again.
func TestACallAfterAnInvalidationNeverGetsTheLoadInFlight(t *testing.T) {
	for name, tc := range map[string]struct {
		invalidate     func(ctx context.Context, c *localcache.Cache[int64]) error
		waitsForTheOld bool
	}{
		"key": {invalidate: func(ctx context.Context, c *localcache.Cache[int64]) error { return c.Invalidate(ctx, "k") }},
		"tag": {invalidate: func(ctx context.Context, c *localcache.Cache[int64]) error { return c.InvalidateTag(ctx, "t:k") }, waitsForTheOld: true},
	} {
		t.Run(name, func(t *testing.T) {
			d, reader, held := racedLoad(t, tc.invalidate)

			later := make(chan int64, 1)
			go func() { later <- getOrLoad(t, reader, d, "k") }()
			var first int64
			if tc.waitsForTheOld {
				// It joins the load in flight; once that ends, it loads again.
				eventually(t, func() bool { return reader.Stats().Shared == 1 }, "the later call joins the load")
				first = held.finish()
			}
			select {
			case v := <-later:
				assert.Equal(t, int64(2), v)
			case <-time.After(waitTimeout):
				held.finish()
				t.Fatal("the later call waited for the load in flight")
			}
			if !tc.waitsForTheOld {
				first = held.finish()
			}
			assert.Equal(t, int64(1), first)
			assert.Equal(t, int64(2), getOrLoad(t, reader, d, "k"), "the new value is what is stored")
		})
	}
}

func TestConcurrentMissesShareOneLoad(t *testing.T) {
	d := newDB(t)
	c := newCache(t, localcache.Config[int64]{})
	d.write(t, "k")
	read := make(chan int64, 1)
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan int64, 10)
	loader := d.gatedLoader("k", read, release)
	for range 10 {
		wg.Go(func() {
			v, err := c.GetOrLoad(context.Background(), "k", loader)
			assert.NoError(t, err)
			results <- v
		})
	}
	<-read
	eventually(t, func() bool { return c.Stats().Shared == 9 }, "every other call joins the load")
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		assert.Equal(t, int64(1), v)
	}
	assert.Equal(t, int64(1), d.loads.Load())
	assert.Equal(t, 1, c.Len())
}

func TestLoaderErrorsAndPanicsAreNotStoredAndReleaseTheOthers(t *testing.T) {
	c := newCache(t, localcache.Config[int64]{})
	boom := errors.New("boom")
	_, err := c.GetOrLoad(t.Context(), "k", func(context.Context) (int64, error) { return 7, boom })
	assert.ErrorIs(t, err, boom)
	_, hit := c.Get("k")
	assert.False(t, hit)

	started := make(chan struct{})
	release := make(chan struct{})
	joined := make(chan error, 1)
	go func() {
		defer func() { assert.Equal(t, "loader bug", recover()) }()
		_, _ = c.GetOrLoad(context.Background(), "k", func(context.Context) (int64, error) {
			close(started)
			<-release
			panic("loader bug")
		})
	}()
	<-started
	go func() {
		_, err := c.GetOrLoad(context.Background(), "k", func(context.Context) (int64, error) { return 1, nil })
		joined <- err
	}()
	eventually(t, func() bool { return c.Stats().Shared == 1 }, "the second call joins")
	close(release)
	assert.ErrorContains(t, <-joined, "panicked")
	assert.Equal(t, int64(3), mustLoad(t, c, "k", 3), "the cache still works")
}

// When the call that runs a load gives up, the calls sharing it are not
// failed with its context's error: they load for themselves.
func TestALoadAbandonedByItsCallerDoesNotFailTheOthers(t *testing.T) {
	c := newCache(t, localcache.Config[int64]{})
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	started := make(chan struct{})
	leader := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(leaderCtx, "k", func(ctx context.Context) (int64, error) {
			close(started)
			<-ctx.Done()
			return 0, ctx.Err()
		})
		leader <- err
	}()
	<-started
	other := make(chan int64, 1)
	go func() { other <- mustLoad(t, c, "k", 5) }()
	eventually(t, func() bool { return c.Stats().Shared == 1 }, "the second call joins")
	cancelLeader()
	assert.ErrorIs(t, <-leader, context.Canceled)
	assert.Equal(t, int64(5), <-other)

	// A caller whose own context ends stops waiting.
	blocked := make(chan struct{})
	go func() {
		_, _ = c.GetOrLoad(context.Background(), "slow", func(context.Context) (int64, error) { <-blocked; return 0, nil })
	}()
	eventually(t, func() bool { return c.Stats().Loads == 3 }, "the slow load runs")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.GetOrLoad(ctx, "slow", func(context.Context) (int64, error) { return 1, nil })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	close(blocked)
}

// mustLoad is GetOrLoad with a loader that returns v.
func mustLoad(t *testing.T, c *localcache.Cache[int64], key string, v int64) int64 {
	t.Helper()
	got, err := c.GetOrLoad(context.Background(), key, func(context.Context) (int64, error) { return v, nil })
	require.NoError(t, err)
	return got
}

func TestSyncCoversWhatOtherNodesPublishedBefore(t *testing.T) {
	d := newDB(t)
	caches := nodes(t, 2, localcache.Config[int64]{})
	reader, writer := caches[0], caches[1]
	d.write(t, "k")
	getOrLoad(t, reader, d, "k")
	for i := range 20 {
		d.write(t, "k")
		require.NoError(t, writer.Invalidate(t.Context(), "k"))
		require.NoError(t, reader.Sync(t.Context()))
		assert.Equal(t, int64(i+2), getOrLoad(t, reader, d, "k"), "read %d", i)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	client := pubsubtest.NewClient(t)
	for _, c := range []struct {
		field  string
		config localcache.Config[int64]
	}{
		{"localcache.Config.Client", localcache.Config[int64]{}},
		{"localcache.Config.MaxEntries", localcache.Config[int64]{Client: client, MaxEntries: -1}},
		{"localcache.Config.MaxKeyBytes", localcache.Config[int64]{Client: client, MaxKeyBytes: -1}},
		{"localcache.Config.MaxTags", localcache.Config[int64]{Client: client, MaxTags: -1}},
		{"localcache.Config.HealthCheckInterval", localcache.Config[int64]{Client: client, HealthCheckInterval: -time.Second}},
		{"localcache.Config.SubscribeTimeout", localcache.Config[int64]{Client: client, SubscribeTimeout: -time.Second}},
		{"localcache.Config.HealthCheckInterval", localcache.Config[int64]{Client: client, HealthCheckInterval: time.Microsecond}},
	} {
		field, config := c.field, c.config
		_, err := localcache.New(config, nil)
		var configErr *redisbus.ConfigError
		require.True(t, errors.As(err, &configErr), "%s: got %v", field, err)
		assert.Equal(t, field, configErr.Field)
		assert.Contains(t, err.Error(), field)
	}
}

func TestCloseIsPromptIdempotentAndLeavesNoGoroutine(t *testing.T) {
	client := pubsubtest.NewClient(t)
	require.NoError(t, client.Ping(t.Context()).Err())
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	c, err := localcache.New(localcache.Config[int64]{Client: client, Topic: pubsubtest.Topic(t)}, nil)
	require.NoError(t, err)
	mustLoad(t, c, "k", 1)
	syncing := make(chan error, 1)
	go func() { syncing <- c.Sync(context.Background()) }()

	start := time.Now()
	var closers sync.WaitGroup
	for range 3 {
		closers.Go(func() { assert.NoError(t, c.Close()) })
	}
	closers.Wait()
	assert.Less(t, time.Since(start), time.Second)
	if err := <-syncing; err != nil {
		assert.ErrorIs(t, err, localcache.ErrClosed)
	}

	_, hit := c.Get("k")
	assert.False(t, hit)
	assert.Equal(t, int64(2), mustLoad(t, c, "k", 2), "GetOrLoad still loads")
	assert.Zero(t, c.Len())
	assert.ErrorIs(t, c.Invalidate(t.Context(), "k"), localcache.ErrClosed)
	assert.ErrorIs(t, c.Sync(t.Context()), localcache.ErrClosed)
	assert.NoError(t, c.Close())
	assert.NoError(t, client.Ping(t.Context()).Err(), "the caller's client stays open")
}
