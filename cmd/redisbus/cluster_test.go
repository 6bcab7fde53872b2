package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCluster runs the console against a Redis Cluster of three masters,
// which it finds out by itself from the URL of one node.
func TestCluster(t *testing.T) {
	e := newClusterEnv(t)
	t.Run("streams lists the topics of every master", func(t *testing.T) { streamsOnEveryMaster(e.with(t)) })
	t.Run("replay to another slot duplicates at worst", func(t *testing.T) { replayToAnotherSlot(e.with(t)) })
	t.Run("replay in one slot is exactly once", func(t *testing.T) { replayInOneSlot(e.with(t)) })
}

func streamsOnEveryMaster(e *env) {
	t := e.t
	ctx := context.Background()
	masters := map[string]bool{}
	for i := range 12 {
		topic := fmt.Sprintf("topic-%02d", i)
		e.xadd(topic, "payload", "x")
		e.xadd(topic+":dead", "payload", "x", "redisbus_reason", "r")
		slot, err := e.client.ClusterKeySlot(ctx, topic).Result()
		require.NoError(t, err)
		masters[fmt.Sprint(slot*3/16384)] = true
	}
	require.Len(t, masters, 3, "the topics are spread over the three masters")

	var topics []StreamSummary
	e.okJSON(&topics, "streams")
	require.Len(t, topics, 12)
	for i, s := range topics {
		assert.Equal(t, fmt.Sprintf("topic-%02d", i), s.Stream)
		assert.EqualValues(t, 1, s.Length)
		assert.EqualValues(t, 1, s.DeadLetters)
	}
}

// On Redis Cluster, orders and orders:dead are in different hash slots,
// which no script may write together: a replay re-adds, then deletes, and
// a kill between the two leaves an entry in both streams, never in
// neither. One entry at a time, a kill duplicates at most one.
func replayToAnotherSlot(e *env) {
	r := e.killMidReplay("orders", 5000, 1)
	assert.Equal(e.t, []string{"orders"}, r.TwoStep)
}

// A hash-tagged topic keeps its dead letters in its slot ({shop} and
// {shop}:dead): replays are exactly once on Redis Cluster too.
func replayInOneSlot(e *env) {
	r := e.killMidReplay("{shop}", 5000, 0)
	assert.Empty(e.t, r.TwoStep)
}
