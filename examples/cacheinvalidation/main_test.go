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

func TestEveryOtherNodeEvictsAndReadsTheNewValue(t *testing.T) {
	var out bytes.Buffer
	key := "product:" + uuid.NewString()
	require.NoError(t, run(t.Context(), &out, pubsubtest.Redis(t).URL, key))
	t.Log(out.String())
	for _, line := range []string{
		"node-2 caches " + key + " = 9.99",
		"node-2 evicted " + key,
		"node-3 evicted " + key,
		"node-1 reads " + key + " = 12.49",
		"node-2 reads " + key + " = 12.49",
		"node-3 reads " + key + " = 12.49",
	} {
		assert.Contains(t, out.String(), line)
	}
	assert.NotContains(t, out.String(), "node-1 evicted", "the writer keeps its own fresh copy")
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

func TestRunsOnTheEmbeddedRedis(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, "", "product:42:price"))
	assert.Contains(t, out.String(), "node-3 reads product:42:price = 12.49")
}
