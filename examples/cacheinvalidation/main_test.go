package main

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	t.Run("REDIS_URL", func(t *testing.T) {
		server := pubsubtest.Redis(t)
		for nth := 1; nth <= 2; nth++ {
			assertRun(t, server.URL, nth)
		}
		keys, err := server.Client(t).Keys(t.Context(), "*cacheinvalidation-example:*").Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "the runs delete the records they made")
	})
	t.Run("embedded Redis", func(t *testing.T) {
		for nth := 1; nth <= 2; nth++ {
			assertRun(t, "", nth)
		}
	})
}

func assertRun(t *testing.T, redisURL string, nth int) {
	t.Helper()
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, redisURL), "run %d", nth)
	assert.Equal(t, wantOutput, out.String(), "run %d", nth)
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
