package localcache_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// On Redis Cluster with Sharded, invalidations are shard-channel messages
// on the master that owns the topic's slot. When the slot moves to another
// master, the old one drops the subscriptions: each node clears, follows
// the slot, and caches again, and no entry cached before is served after.
func TestShardedInvalidationsFollowTheirSlot(t *testing.T) {
	t.Parallel()
	cluster := pubsubtest.StartCluster(t, 3)
	d := newDB(t)
	config := localcache.Config[int64]{Client: cluster.Client(t), Topic: pubsubtest.Topic(t), Sharded: true}
	caches := nodes(t, 2, config)
	reader, writer := caches[0], caches[1]

	d.write(t, "k")
	assert.Equal(t, int64(1), getOrLoad(t, reader, d, "k"))
	d.write(t, "k")
	require.NoError(t, writer.Invalidate(t.Context(), "k"))
	syncAll(t, reader)
	assert.Equal(t, int64(2), getOrLoad(t, reader, d, "k"))
	assert.Equal(t, 1, reader.Len())

	slot := cluster.Slot(t, config.Topic)
	cluster.MoveSlot(t, slot, (cluster.Owner(t, slot)+1)%3)
	eventually(t, func() bool { s := reader.Stats(); return s.Losses == 1 && s.Up }, "the slot followed")
	_, hit := reader.Get("k")
	assert.False(t, hit, "what was cached before the move is gone")

	assert.Equal(t, int64(2), getOrLoad(t, reader, d, "k"))
	d.write(t, "k")
	eventually(t, func() bool { return writer.Stats().Up }, "the writer followed the slot")
	require.NoError(t, writer.Invalidate(t.Context(), "k"))
	syncAll(t, reader)
	assert.Equal(t, int64(3), getOrLoad(t, reader, d, "k"))
}
