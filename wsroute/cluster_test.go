package wsroute_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
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

// Presence on a Redis Cluster: joins, queries, events read with a Streams
// subscriber on the cluster, and a dead node's members swept, all in the
// registry's slot.
func TestPresenceOnARedisCluster(t *testing.T) {
	redisCluster := pubsubtest.StartCluster(t, 3)
	client := redisCluster.Client(t)
	config := wsroute.Config{Prefix: "{" + pubsubtest.Topic(t) + "}:", NodeTTL: 300 * time.Millisecond, PresenceEvents: true}
	config.NodeID = "a"
	a := startNode(t, client, config)
	doomedClient := redisCluster.Client(t)
	config.NodeID = "doomed"
	doomed := startNode(t, doomedClient, config)
	events := subscribePresence(t, client, a)
	a.connect(t, "alice")
	doomed.connect(t, "bob")
	require.NoError(t, a.JoinWithInfo(t.Context(), "alice", "lobby", []byte("laptop")))
	require.NoError(t, doomed.Join(t.Context(), "bob", "lobby"))
	assert.Equal(t, joined("lobby", "alice", "a", "laptop"), events.next(t))
	assert.Equal(t, joined("lobby", "bob", "doomed", ""), events.next(t))
	assert.Equal(t, []string{"alice: a laptop", "bob: doomed"}, presence(t, a, "lobby"))

	require.NoError(t, doomedClient.Close()) // killed: a sweeps its members out
	assert.Equal(t, left("lobby", "bob", "doomed", wsroute.ReasonNodeGone), events.next(t))
	assert.Equal(t, []string{"alice: a laptop"}, presence(t, a, "lobby"))
	events.nothingBefore(t, a)
}

// When the registry's slot moves to another master (resharding), routing
// keeps telling the truth: a message reported Delivered reaches the client
// and one reported otherwise does not; once the nodes listen on the new
// owner, messages are Delivered again without anything reaped, since the
// registrations moved with the slot. The same with clients that read from
// replicas or the closest node: every master has a replica.
func TestRoutingFollowsARegistrySlotMigration(t *testing.T) {
	redisCluster := pubsubtest.StartCluster(t, 3)
	redisCluster.AddReplicas(t)
	for _, tc := range []struct {
		name    string
		options redis.ClusterOptions
	}{
		{"Masters", redis.ClusterOptions{}},
		{"ReadOnly", redis.ClusterOptions{ReadOnly: true}},
		{"RouteByLatency", redis.ClusterOptions{RouteByLatency: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			options := tc.options
			options.Addrs = redisCluster.Addrs
			client := redis.NewClusterClient(&options)
			t.Cleanup(func() { _ = client.Close() })
			logger := pubsubtest.NewRecordingLogger()
			config := wsroute.Config{Prefix: "{" + pubsubtest.Topic(t) + "}:"}
			nodes := make([]*testNode, 2)
			for i := range nodes {
				c := config
				c.NodeID = fmt.Sprintf("node-%d", i)
				nodes[i] = startLoggedNode(t, client, c, logger)
			}
			alice := nodes[0].connect(t, "alice")
			bob := nodes[1].connect(t, "bob")
			result, err := nodes[0].SendToClient(t.Context(), "bob", []byte("before the move"))
			require.NoError(t, err)
			require.Equal(t, wsroute.Delivered, result.Status)
			require.Equal(t, "before the move", read(t, bob))
			slot := redisCluster.Slot(t, config.Prefix)
			moveSlot := func() {
				redisCluster.MoveSlot(t, slot, (redisCluster.Owner(t, slot)+1)%len(redisCluster.Addrs))
			}

			// Right after the move, until the nodes listen again.
			moveSlot()
			moved := time.Now()
			var statuses runs
			var reachedAgain time.Duration
			deadline := time.Now().Add(waitTimeout)
			for i, delivered := 0, 0; delivered < 3; i++ {
				payload := fmt.Sprintf("after the move %d", i)
				result, err := nodes[0].SendToClient(t.Context(), "bob", []byte(payload))
				require.NoError(t, err)
				statuses.add(result.Status.String())
				if result.Status == wsroute.Delivered {
					if delivered == 0 {
						reachedAgain = time.Since(moved)
					}
					delivered++
					require.Equal(t, payload, read(t, bob), "bob received a message that was not reported Delivered (statuses %v)", statuses)
				}
				if time.Now().After(deadline) {
					t.Fatalf("bob, connected, was not reached again within %s of the move (statuses %v)", waitTimeout, statuses)
				}
				time.Sleep(5 * time.Millisecond) // between tries, while the nodes subscribe again
			}
			t.Logf("sends to bob after the move: %v; the first delivered %s after the move", statuses, reachedAgain)

			// With nobody sending until the nodes listen again, nothing
			// is reaped: the registrations moved with the slot.
			restored := func() int { return len(logger.Find(watermill.InfoLogLevel, "subscription connection restored")) }
			before := restored()
			reaped := nodes[0].Stats().Reaped + nodes[1].Stats().Reaped
			moveSlot()
			deadline = time.Now().Add(waitTimeout)
			for restored() < before+4 { // each node's channel and the broadcast channel
				if time.Now().After(deadline) {
					t.Fatalf("the nodes did not subscribe again after the move (%d of 4 channels)", restored()-before)
				}
				time.Sleep(5 * time.Millisecond) // the logger has no notification to wait on
			}
			result, err = nodes[0].SendToClient(t.Context(), "bob", []byte("to bob"))
			require.NoError(t, err)
			assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 1}, result)
			assert.Equal(t, "to bob", read(t, bob))
			result, err = nodes[1].SendToClient(t.Context(), "alice", []byte("to alice"))
			require.NoError(t, err)
			assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 1}, result)
			assert.Equal(t, "to alice", read(t, alice))
			result, err = nodes[1].BroadcastAll(t.Context(), []byte("everyone"))
			require.NoError(t, err)
			assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 2}, result, "every node counted")
			assert.Equal(t, "everyone", read(t, alice))
			assert.Equal(t, "everyone", read(t, bob))
			assert.Equal(t, reaped, nodes[0].Stats().Reaped+nodes[1].Stats().Reaped, "registrations were reaped")
		})
	}
}

// runs records a sequence of words compactly: "offline ×3" for a run.
type runs []string

func (r *runs) add(word string) {
	if n := len(*r); n > 0 {
		last, count, _ := strings.Cut((*r)[n-1], " ×")
		if last == word {
			c, _ := strconv.Atoi(count)
			(*r)[n-1] = fmt.Sprintf("%s ×%d", word, max(c, 1)+1)
			return
		}
	}
	*r = append(*r, word)
}
