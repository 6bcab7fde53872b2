package main

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/internal/exampletest"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

const wantOutput = `node-1 caches product:42:price = 9.99
node-2 caches product:42:price = 9.99
node-3 caches product:42:price = 9.99
node-1 sets product:42:price = 12.49
node-2 evicted product:42:price
node-3 evicted product:42:price
node-1 reads product:42:price = 12.49
node-2 reads product:42:price = 12.49
node-3 reads product:42:price = 12.49
`

// Run twice against one Redis, the example prints the same lines: every
// other node evicts, and every node reads the new value. Each run has a
// key of its own, and deletes it.
func TestEveryRunEveryOtherNodeEvictsAndReadsTheNewValue(t *testing.T) {
	exampletest.SameOutputEveryRun(t, run, wantOutput, "*cacheinvalidation-example:*")
}

// The writer drops its own copy too, and the next read loads the record
// once; the reads after it are served from the cache.
func TestNodeServesRepeatedReadsFromItsCache(t *testing.T) {
	opt := pubsubtest.NewClient(t).Options()
	key := "product:" + uuid.NewString()
	n, err := StartNode(t.Context(), "solo", opt)
	require.NoError(t, err)
	defer n.Close()
	require.NoError(t, n.store.Set(t.Context(), key, "0", 0).Err())
	defer n.store.Del(t.Context(), key)
	v, err := n.Get(t.Context(), key)
	require.NoError(t, err)
	require.Equal(t, "0", v)

	require.NoError(t, n.Set(t.Context(), key, "1"))
	assert.False(t, n.Cached(key), "Set drops the old copy")
	for range 3 {
		v, err := n.Get(t.Context(), key)
		require.NoError(t, err)
		assert.Equal(t, "1", v)
	}
	stats := n.cache.Stats()
	assert.Equal(t, uint64(2), stats.Loads, "one load before Set, one after")
	assert.Equal(t, uint64(2), stats.Hits)
	assert.True(t, n.Cached(key))
}
