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
// other node evicts, every node reads the new value, and the writer keeps
// its own copy. Each run has a key of its own, and deletes it.
func TestEveryRunEveryOtherNodeEvictsAndReadsTheNewValue(t *testing.T) {
	exampletest.SameOutputEveryRun(t, run, wantOutput, "*cacheinvalidation-example:*")
}

func TestNodeServesRepeatedReadsFromItsCache(t *testing.T) {
	opt := pubsubtest.NewClient(t).Options()
	key := "product:" + uuid.NewString()
	n, err := StartNode(t.Context(), "solo", opt, nil)
	require.NoError(t, err)
	defer n.Close()
	require.NoError(t, n.Set(t.Context(), key, "1"))
	for range 3 {
		v, err := n.Get(t.Context(), key)
		require.NoError(t, err)
		assert.Equal(t, "1", v)
	}
	assert.Equal(t, 3, n.hits)
	assert.True(t, n.Cached(key))
}
