package wsroute_test

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// aclNode is the ACL rule set docs/operating-redis.md documents for a
// wsroute node under the default Prefix, word for word.
var aclNode = []string{"-@all", "+hset", "+set", "+pexpire", "+multi", "+exec",
	"+eval", "+evalsha", "+get", "+del", "+hget", "+hgetall", "+hdel", "+hscan", "+xadd",
	"+hincrby", "+xrange", "+time", "+info", "+hmget", "+publish", "+subscribe", "+unsubscribe", "+ping",
	"resetkeys", "~wsroute:*", "resetchannels", "&wsroute:*"}

// aclClusterNode is the rule set documented for a node on Redis Cluster,
// with Prefix "{wsroute}:": shard channels, and the slot map. (+hscan
// takes a dead node's presence entries in batches, +xadd records presence
// events and histories, +hincrby +xrange +time +info +hmget keep and read histories.)
var aclClusterNode = []string{"-@all", "+hset", "+set", "+pexpire", "+multi", "+exec",
	"+eval", "+evalsha", "+get", "+del", "+hget", "+hgetall", "+hdel", "+hscan", "+xadd",
	"+hincrby", "+xrange", "+time", "+info", "+hmget", "+spublish", "+ssubscribe", "+sunsubscribe", "+ping", "+cluster|slots", "+command",
	"resetkeys", "~{wsroute}:*", "resetchannels", "&{wsroute}:*"}

// The page shows the rules the tests use, word for word.
func TestACLRulesAreDocumented(t *testing.T) {
	page, err := os.ReadFile("../docs/operating-redis.md")
	require.NoError(t, err)
	assert.Contains(t, string(page), "`"+strings.Join(aclNode, " ")+"`")
	escaped := strings.ReplaceAll(strings.Join(aclClusterNode, " "), "|", `\|`) // in a Markdown table
	assert.Contains(t, string(page), "`"+escaped+"`")
}

func setUser(t *testing.T, admin redis.UniversalClient, rules []string) {
	t.Helper()
	pubsubtest.SetACLUser(t, admin, "wsroute", "pw", rules)
}

// assertNoRefusal checks that Redis refused no command for want of a
// permission: the rules were enough.
func assertNoRefusal(t *testing.T, admin redis.UniversalClient) {
	t.Helper()
	assert.Empty(t, pubsubtest.ACLRefusals(t, admin), "Redis refused commands: the documented ACL rules are not enough")
}

// Nodes run as an ACL user with exactly the documented permissions.
func TestNodesWithTheDocumentedACL(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t)
	setUser(t, admin, aclNode)
	user := redis.NewClient(&redis.Options{Addr: server.Addr, Username: "wsroute", Password: "pw"})
	t.Cleanup(func() { _ = user.Close() })
	useEveryCommand(t, user, admin, wsroute.Config{})
	assertNoRefusal(t, admin)
}

// The same on Redis Cluster, with the rules set on every master.
func TestNodesOnAClusterWithTheDocumentedACL(t *testing.T) {
	redisCluster := pubsubtest.StartCluster(t, 3)
	var admins []*redis.Client
	for _, addr := range redisCluster.Addrs {
		admin := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = admin.Close() })
		setUser(t, admin, aclClusterNode)
		admins = append(admins, admin)
	}
	user := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redisCluster.Addrs, Username: "wsroute", Password: "pw"})
	t.Cleanup(func() { _ = user.Close() })
	useEveryCommand(t, user, redisCluster.Client(t), wsroute.Config{Prefix: "{wsroute}:"})
	for _, admin := range admins {
		assertNoRefusal(t, admin)
	}
}

// useEveryCommand runs nodes through what a node sends Redis:
// registering, routing to a client and a room, broadcasting, presence
// (joining with info, recording events, asking, removing a dead node's
// members on the way and by the sweep), histories (keeping, recovering),
// leaving, renewing, disconnecting and closing. admin, a client without the rules, watches the sweep.
func useEveryCommand(t *testing.T, user, admin redis.UniversalClient, config wsroute.Config) {
	t.Helper()
	config.NodeTTL = 300 * time.Millisecond // renewals and sweeps every 100 ms
	config.PresenceEvents = true
	config.History = keepAll
	config.NodeID = "a"
	a := startNode(t, user, config)
	config.NodeID = "b"
	b := startNode(t, user, config)
	alice := a.connect(t, "alice")
	bob := b.connect(t, "bob")

	// A node that dies with a member in a room: a query removes its entry,
	// then the sweep forgets the node.
	config.NodeID = "doomed"
	doomedUser := sameUser(user)
	doomed := startNode(t, doomedUser, config)
	doomed.connect(t, "carol")
	require.NoError(t, doomed.Join(t.Context(), "carol", "kitchen"))
	require.NoError(t, doomedUser.Close())
	require.Eventually(t, func() bool {
		members, err := a.Presence(t.Context(), "kitchen")
		return err == nil && len(members) == 0
	}, waitTimeout, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		nodes, err := admin.HVals(t.Context(), config.Prefix+"incarnations").Result()
		return err == nil && !slices.Contains(nodes, "doomed")
	}, waitTimeout, 5*time.Millisecond, "the sweep forgets the dead node")

	result, err := a.SendToClient(t.Context(), "bob", []byte("hi bob"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Delivered, result.Status)
	assert.Equal(t, "hi bob", read(t, bob))

	require.NoError(t, b.JoinWithInfo(t.Context(), "bob", "lobby", []byte("info")))
	members, err := a.Presence(t.Context(), "lobby")
	require.NoError(t, err)
	assert.Len(t, members, 1)
	result, err = a.Broadcast(t.Context(), "lobby", []byte("hi lobby"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Delivered, result.Status)
	assert.Equal(t, "hi lobby", read(t, bob))
	_, err = b.BroadcastAll(t.Context(), []byte("everyone"))
	require.NoError(t, err)
	assert.Equal(t, "everyone", read(t, alice))
	require.NoError(t, b.Leave(t.Context(), "bob", "lobby"))

	// Renewals run while the liveness key lives three periods.
	renewed := a.Stats().LivenessRenewed
	require.Eventually(t, func() bool { return a.Stats().LivenessRenewed >= renewed+3 }, waitTimeout, 5*time.Millisecond)

	// A framed client recovers what it missed, on another node.
	dave := dialFramed(t, a.url, "dave", nil)
	at := dave.position(t, "client")
	dave.close()
	sendMany(t, b, "client", "dave", 2, "missed")
	back := dialFramed(t, b.url, "dave", map[string]wsroute.Position{"client": pos(at)})
	expectData(t, back.messages(t, "client", at.Offset, 2, true), "missed")
	assert.True(t, back.position(t, "client").recovered())
	back.close()

	require.NoError(t, bob.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { return b.Stats().Connections == 0 }, waitTimeout, 5*time.Millisecond)
	require.Eventually(t, func() bool { // the disconnect removes the registration right after
		result, err := a.SendToClient(t.Context(), "bob", []byte("gone"))
		return err == nil && result.Status == wsroute.Offline
	}, waitTimeout, 5*time.Millisecond)
	require.NoError(t, b.Close())
}

// sameUser returns a new client with the options of user.
func sameUser(user redis.UniversalClient) redis.UniversalClient {
	if cluster, ok := user.(*redis.ClusterClient); ok {
		options := *cluster.Options()
		options.Addrs = slices.Clone(options.Addrs) // go-redis appends to it
		return redis.NewClusterClient(&options)
	}
	return redis.NewClient(user.(*redis.Client).Options())
}
