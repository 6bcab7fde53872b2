package localcache_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// proxiedNodes returns a cache whose Redis connections go through a proxy
// the test can cut, and a cache on the same topic that reaches Redis
// directly.
func proxiedNodes(t *testing.T, config localcache.Config[int64]) (cut, other *localcache.Cache[int64], proxy *pubsubtest.Proxy) {
	t.Helper()
	config.Topic = pubsubtest.Topic(t)
	config.HealthCheckInterval = 100 * time.Millisecond
	other = newCache(t, config)
	config.Client, proxy = proxiedClient(t, 200*time.Millisecond)
	cut = newCache(t, config)
	return cut, other, proxy
}

// The node's subscription goes silent (a partition: no error, no data)
// while another node writes and invalidates. Once the node finds the
// connection lost and subscribes again, it serves the new value, not the
// one it cached before.
func TestNoStaleReadAfterASilentDropWhileAnotherNodeWrites(t *testing.T) {
	d := newDB(t)
	cut, other, proxy := proxiedNodes(t, localcache.Config[int64]{})
	d.write(t, "k")
	assert.Equal(t, int64(1), getOrLoad(t, cut, d, "k"))
	assert.Equal(t, int64(1), getOrLoad(t, cut, d, "k"))
	require.Equal(t, int64(1), d.loads.Load())

	proxy.FreezeOpenConnections() // new connections pass: the node reconnects by itself
	d.write(t, "k")
	require.NoError(t, other.Invalidate(t.Context(), "k")) // lost to cut

	eventually(t, func() bool { s := cut.Stats(); return s.Losses == 1 && s.Up }, "the loss found, the subscription back")
	assert.Equal(t, int64(2), getOrLoad(t, cut, d, "k"))
	assert.Equal(t, int64(2), d.loads.Load(), "loaded again after the loss")
	assert.Equal(t, int64(2), getOrLoad(t, cut, d, "k"))
	assert.Equal(t, int64(2), d.loads.Load(), "and stored again once the subscription is back")

	// The subscription works again: invalidations arrive.
	d.write(t, "k")
	require.NoError(t, other.Invalidate(t.Context(), "k"))
	syncAll(t, cut)
	assert.Equal(t, int64(3), getOrLoad(t, cut, d, "k"))
}

// While the subscription is down, the node serves nothing from its cache:
// every read loads, and nothing is stored, so that no invalidation missed
// meanwhile can leave a stale entry behind. Once it is back, the node
// caches again.
func TestReadsBypassTheCacheWhileTheSubscriptionIsDown(t *testing.T) {
	d := newDB(t)
	cut, other, proxy := proxiedNodes(t, localcache.Config[int64]{})
	d.write(t, "k")
	getOrLoad(t, cut, d, "k")
	require.Equal(t, 1, cut.Len())

	proxy.Blackhole() // no connection gets through until Heal
	eventually(t, func() bool { return !cut.Stats().Up }, "the loss is found")
	assert.Zero(t, cut.Len(), "cleared when the loss is found")
	for i := range 3 {
		version := d.write(t, "k")
		require.NoError(t, other.Invalidate(t.Context(), "k"))
		_, hit := cut.Get("k")
		assert.False(t, hit)
		assert.Equal(t, version, getOrLoad(t, cut, d, "k"), "read %d", i)
		assert.Zero(t, cut.Len(), "nothing is stored while down")
	}
	assert.NoError(t, cut.Sync(t.Context()), "Sync returns at once: nothing is served")
	assert.Equal(t, uint64(3), cut.Stats().Bypassed)

	proxy.Heal()
	eventually(t, func() bool { return cut.Stats().Up }, "the subscription is back")
	version := d.write(t, "k")
	loads := d.loads.Load()
	assert.Equal(t, version, getOrLoad(t, cut, d, "k"))
	assert.Equal(t, version, getOrLoad(t, cut, d, "k"))
	assert.Equal(t, loads+1, d.loads.Load(), "cached again")
}

// A load that began before the loss, read the old value, and ends after
// the subscription is back is not stored: an invalidation in the loss
// window may cover it. Its caller, who asked before, gets what it read.
func TestALoadAcrossALossIsNotStored(t *testing.T) {
	d := newDB(t)
	cut, other, proxy := proxiedNodes(t, localcache.Config[int64]{})
	d.write(t, "k")

	held := startHeldLoad(t, cut, d, "k")
	require.Equal(t, int64(1), held.read)

	proxy.Blackhole()
	eventually(t, func() bool { return !cut.Stats().Up }, "the loss is found")
	d.write(t, "k")
	require.NoError(t, other.Invalidate(t.Context(), "k"))
	proxy.Heal()
	eventually(t, func() bool { return cut.Stats().Up }, "the subscription is back")

	assert.Equal(t, int64(1), held.finish())
	assert.Equal(t, uint64(1), cut.Stats().Discarded)
	assert.Equal(t, int64(2), getOrLoad(t, cut, d, "k"))
}

// A load that began while the subscription was down and ends after it is
// back is not stored either: it may have read before an invalidation the
// node missed.
func TestALoadBegunWhileDownIsNotStoredOnceUp(t *testing.T) {
	d := newDB(t)
	cut, _, proxy := proxiedNodes(t, localcache.Config[int64]{})
	d.write(t, "k")
	proxy.Blackhole()
	eventually(t, func() bool { return !cut.Stats().Up }, "the loss is found")

	held := startHeldLoad(t, cut, d, "k")
	proxy.Heal()
	eventually(t, func() bool { return cut.Stats().Up }, "the subscription is back")
	assert.Equal(t, held.read, held.finish())
	assert.Zero(t, cut.Len())
}

// New returns only once the subscription is confirmed, so a node never
// caches before it can hear invalidations; when Redis does not confirm, New
// fails rather than start a cache that could not vouch for anything.
func TestNewFailsWhenTheSubscriptionCannotBeConfirmed(t *testing.T) {
	client, proxy := proxiedClient(t, 200*time.Millisecond)
	proxy.Blackhole()
	start := time.Now()
	_, err := localcache.New(localcache.Config[int64]{Client: client, Topic: pubsubtest.Topic(t), SubscribeTimeout: 300 * time.Millisecond}, nil)
	assert.ErrorContains(t, err, "SubscribeTimeout")
	assert.Less(t, time.Since(start), waitTimeout)
}

// A topic that Redis refuses when the connection comes back (the ACL user
// lost it) ends the subscription: the node bypasses its cache, and
// subscribes again until Redis lets it.
func TestARefusedResubscriptionBypassesUntilRedisAllowsIt(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t)
	allow := []string{"+@all", "allkeys", "allchannels"}
	pubsubtest.SetACLUser(t, admin, "cache", "secret", allow)
	topic := "app:" + pubsubtest.Topic(t)
	client := redis.NewClient(&redis.Options{Addr: server.Addr, Username: "cache", Password: "secret"})
	t.Cleanup(func() { _ = client.Close() })
	c, err := localcache.New(localcache.Config[int64]{Client: client, Topic: topic, HealthCheckInterval: 100 * time.Millisecond}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	mustLoad(t, c, "k", 1)

	// The user may use no channel now; its connections are killed.
	pubsubtest.SetACLUser(t, admin, "cache", "secret", []string{"+@all", "allkeys", "resetchannels"})
	require.NoError(t, admin.Do(t.Context(), "CLIENT", "KILL", "USER", "cache").Err())
	eventually(t, func() bool { s := c.Stats(); return s.Losses == 2 && !s.Up },
		"the connection lost, then the subscription ended when Redis refused the topic")
	assert.Equal(t, int64(2), mustLoad(t, c, "k", 2))
	assert.Zero(t, c.Len(), "nothing is stored while the topic is refused")

	pubsubtest.SetACLUser(t, admin, "cache", "secret", allow)
	eventually(t, func() bool { return c.Stats().Up }, "subscribed again")
	assert.Equal(t, int64(3), mustLoad(t, c, "k", 3))
	assert.Equal(t, int64(3), mustLoad(t, c, "k", 4), "cached again")
	assert.Equal(t, uint64(2), c.Stats().Losses)
}
