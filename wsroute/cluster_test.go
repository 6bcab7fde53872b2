package wsroute_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// On a Redis Cluster the registry's scripts touch keys they compute, so
// every key must share a slot: a hash-tagged prefix does that.
func TestNodesOnARedisCluster(t *testing.T) {
	redisCluster := pubsubtest.StartCluster(t, 3)
	client := redisCluster.Client(t)
	config := wsroute.Config{Prefix: "{" + pubsubtest.Topic(t) + "}:"}
	nodes := make([]*testNode, 3)
	for i := range nodes {
		c := config
		c.NodeID = fmt.Sprintf("node-%d", i)
		nodes[i] = startNode(t, client, c)
	}
	alice := nodes[0].connect(t, "alice")
	bob := nodes[1].connect(t, "bob")
	carol := nodes[2].connect(t, "carol")

	result, err := nodes[0].SendToClient(t.Context(), "bob", []byte("hi bob"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 1}, result)
	assert.Equal(t, "hi bob", read(t, bob))

	require.NoError(t, nodes[0].Join(t.Context(), "alice", "lobby"))
	require.NoError(t, nodes[2].Join(t.Context(), "carol", "lobby"))
	result, err = nodes[1].Broadcast(t.Context(), "lobby", []byte("hello lobby"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 2}, result)
	assert.Equal(t, "hello lobby", read(t, alice))
	assert.Equal(t, "hello lobby", read(t, carol))

	_, err = nodes[2].BroadcastAll(t.Context(), []byte("everyone"))
	require.NoError(t, err)
	assert.Equal(t, "everyone", read(t, bob), "bob got nothing from the room before this")
	assert.Equal(t, "everyone", read(t, alice))
	assert.Equal(t, "everyone", read(t, carol))

	result, err = nodes[0].SendToClient(t.Context(), "nobody", []byte("?"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Offline, result.Status)
}
