package wsroute_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// cluster starts n nodes sharing one registry.
func cluster(t *testing.T, n int, config wsroute.Config) []*testNode {
	client := pubsubtest.NewClient(t)
	config.Prefix = pubsubtest.Topic(t) + ":"
	nodes := make([]*testNode, n)
	for i := range nodes {
		c := config
		c.NodeID = fmt.Sprintf("node-%d", i)
		nodes[i] = startNode(t, client, c)
	}
	return nodes
}

func TestSendToClientOnAnotherNode(t *testing.T) {
	nodes := cluster(t, 2, wsroute.Config{})
	bob := nodes[1].connect(t, "bob")

	result, err := nodes[0].SendToClient(t.Context(), "bob", []byte("hi bob"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 1}, result)
	assert.Equal(t, "hi bob", read(t, bob))

	result, err = nodes[0].SendToClient(t.Context(), "nobody", []byte("?"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Offline, result.Status)
}

func TestEveryConnectionOfAClientReceives(t *testing.T) {
	nodes := cluster(t, 2, wsroute.Config{})
	laptop := nodes[0].connect(t, "bob")
	phone := nodes[1].connect(t, "bob")
	tab := nodes[1].connect(t, "bob")

	result, err := nodes[0].SendToClient(t.Context(), "bob", []byte("to every device"))
	require.NoError(t, err)
	assert.Equal(t, 2, result.Nodes)
	for _, ws := range []*websocket.Conn{laptop, phone, tab} {
		assert.Equal(t, "to every device", read(t, ws))
	}
}

func TestMessagesFromOneSenderArriveInOrder(t *testing.T) {
	nodes := cluster(t, 2, wsroute.Config{SendQueueSize: 2000})
	bob := nodes[1].connect(t, "bob")
	const count = 1000
	for i := range count {
		_, err := nodes[0].SendToClient(t.Context(), "bob", []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	for i := range count {
		require.Equal(t, fmt.Sprint(i), read(t, bob))
	}
}

func TestLateDisconnectDoesNotRemoveANewerRegistration(t *testing.T) {
	nodes := cluster(t, 2, wsroute.Config{})
	old := nodes[0].connect(t, "bob")
	moved := nodes[1].connect(t, "bob") // bob reconnects elsewhere before the old socket is noticed dead

	require.NoError(t, old.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { return nodes[0].Stats().Connections == 0 }, waitTimeout, 5*time.Millisecond)

	result, err := nodes[0].SendToClient(t.Context(), "bob", []byte("still here?"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 1}, result)
	assert.Equal(t, "still here?", read(t, moved))
}

// Connection IDs fence: a message routed to a connection that has closed
// names an ID no connection has again, so bob's new connection on the same
// node gets only the copy meant for it.
func TestMessageForAClosedConnectionIsNotDelivered(t *testing.T) {
	client := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t) + ":"
	node := startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "n"})
	key := prefix + "client:bob"
	old := node.connect(t, "bob")
	closed, err := client.HGetAll(t.Context(), key).Result()
	require.NoError(t, err)
	require.Len(t, closed, 1)
	require.NoError(t, old.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool {
		n, err := client.Exists(t.Context(), key).Result()
		return err == nil && n == 0
	}, waitTimeout, 5*time.Millisecond, "the closed connection's entry is released")
	bob := node.connect(t, "bob") // reconnects to the same node

	// The registry as a route racing with the old connection's release
	// read it: both connections, on this node.
	require.NoError(t, client.HSet(t.Context(), key, closed).Err())
	result, err := node.SendToClient(t.Context(), "bob", []byte("once"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 1}, result)
	_, err = node.BroadcastAll(t.Context(), []byte("marker"))
	require.NoError(t, err)
	assert.Equal(t, "once", read(t, bob))
	assert.Equal(t, "marker", read(t, bob), "the copy for the closed connection must not arrive")
	assert.Equal(t, uint64(1), node.Stats().Fenced)
}

func TestUnreachableOwnerIsReportedAndCleaned(t *testing.T) {
	client := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t) + ":"
	node := startNode(t, client, wsroute.Config{Prefix: prefix})
	// A node that is alive but does not listen to its channel.
	require.NoError(t, client.Set(t.Context(), prefix+"node:ghost", "inc", time.Minute).Err())
	require.NoError(t, client.HSet(t.Context(), prefix+"client:bob", "conn-1", "ghost\ninc").Err())

	result, err := node.SendToClient(t.Context(), "bob", []byte("?"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Unreachable, Stale: 1}, result)
	exists, err := client.HExists(t.Context(), prefix+"client:bob", "conn-1").Result()
	require.NoError(t, err)
	assert.False(t, exists, "the unreachable entry is removed")
	result, err = node.SendToClient(t.Context(), "bob", []byte("?"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Offline, result.Status)
}

func TestRoomBroadcastReachesOnlyMemberNodes(t *testing.T) {
	nodes := cluster(t, 3, wsroute.Config{})
	alice := nodes[0].connect(t, "alice")
	bob := nodes[1].connect(t, "bob")
	carol := nodes[2].connect(t, "carol")
	require.NoError(t, nodes[0].Join(t.Context(), "alice", "lobby"))
	require.NoError(t, nodes[2].Join(t.Context(), "carol", "lobby"))
	assert.ErrorIs(t, nodes[1].Join(t.Context(), "nobody-here", "lobby"), wsroute.ErrNotConnected)

	before := nodes[1].Stats().Received
	result, err := nodes[1].Broadcast(t.Context(), "lobby", []byte("hello lobby"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 2}, result)
	assert.Equal(t, "hello lobby", read(t, alice))
	assert.Equal(t, "hello lobby", read(t, carol))

	_, err = nodes[1].BroadcastAll(t.Context(), []byte("everyone"))
	require.NoError(t, err)
	assert.Equal(t, "everyone", read(t, bob), "bob got nothing from the room before this")
	assert.Equal(t, "everyone", read(t, alice))
	assert.Equal(t, "everyone", read(t, carol))
	assert.Equal(t, before+1, nodes[1].Stats().Received, "the room broadcast never reached node-1")

	require.NoError(t, nodes[0].Leave(t.Context(), "alice", "lobby"))
	require.NoError(t, carol.Close(websocket.StatusNormalClosure, "")) // leaving by disconnecting
	// The node forgets the connection, then takes it out of its rooms in
	// Redis: wait for Redis.
	require.Eventually(t, func() bool {
		result, err := nodes[1].Broadcast(t.Context(), "lobby", []byte("anyone?"))
		return err == nil && result.Status == wsroute.Offline
	}, waitTimeout, 5*time.Millisecond, "the room still has a member node")
	assert.Zero(t, nodes[2].Stats().Connections)
}

func TestSlowClientDoesNotSlowOthers(t *testing.T) {
	for _, policy := range []wsroute.SlowClientPolicy{wsroute.DropOldest, wsroute.Disconnect} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			// A queue of 64: the slow client fills it, the fast one's
			// writer would need a 10 ms stall to (on 2 loaded cores, 8
			// was once too few).
			nodes := cluster(t, 2, wsroute.Config{SendQueueSize: 64, SlowClient: policy, WriteTimeout: time.Minute})
			slow := nodes[1].connect(t, "slow") // never reads
			fast := nodes[1].connect(t, "fast")

			// Big messages fill the slow client's socket buffers, then its
			// queue.
			big := strings.Repeat("x", 256<<10)
			var slowClosed chan websocket.StatusCode // once the node disconnected it
			for i := range 200 {
				_, err := nodes[0].SendToClient(t.Context(), "slow", []byte(big))
				require.NoError(t, err)
				_, err = nodes[0].SendToClient(t.Context(), "fast", []byte(fmt.Sprint(i)))
				require.NoError(t, err)
				if policy == wsroute.Disconnect && slowClosed == nil && nodes[1].Stats().Disconnected == 1 {
					// The slow client reads from now on, and finds the
					// close frame behind what was buffered before the
					// node's closing handshake gives up on it (a slow
					// Redis makes the sends above take long).
					slowClosed = make(chan websocket.StatusCode, 1)
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
						defer cancel()
						for {
							if _, _, err := slow.Read(ctx); err != nil {
								slowClosed <- websocket.CloseStatus(err)
								return
							}
						}
					}()
				}
			}
			for i := range 200 {
				require.Equal(t, fmt.Sprint(i), read(t, fast))
			}
			stats := nodes[1].Stats()
			if policy == wsroute.DropOldest {
				assert.Positive(t, stats.Dropped)
				assert.Zero(t, stats.Disconnected)
			} else {
				assert.Equal(t, uint64(1), stats.Disconnected)
				require.NotNil(t, slowClosed, "the slow client was not disconnected")
				assert.Equal(t, websocket.StatusPolicyViolation, <-slowClosed)
			}
		})
	}
}

func TestBadFramesCloseOnlyTheirConnection(t *testing.T) {
	nodes := cluster(t, 1, wsroute.Config{})
	node := nodes[0]
	good := node.connect(t, "good")

	tooBig := node.connect(t, "big")
	require.NoError(t, tooBig.Write(t.Context(), websocket.MessageText, []byte(strings.Repeat("x", 2048))))
	assert.Equal(t, websocket.StatusMessageTooBig, closeStatus(t, tooBig))

	badUTF8 := node.connect(t, "bad")
	require.NoError(t, badUTF8.Write(t.Context(), websocket.MessageText, []byte{0xff, 0xfe}))
	assert.Equal(t, websocket.StatusInvalidFramePayloadData, closeStatus(t, badUTF8))

	_, err := node.SendToClient(t.Context(), "good", []byte("unaffected"))
	require.NoError(t, err)
	assert.Equal(t, "unaffected", read(t, good))
}

func TestUpgradeRequiresAuthenticationAndSameOrigin(t *testing.T) {
	node := cluster(t, 1, wsroute.Config{})[0]
	ctx := t.Context()

	_, resp, err := websocket.Dial(ctx, node.url, nil) // no ?client=
	require.Error(t, err)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	_, resp, err = websocket.Dial(ctx, node.url+"?client=mallory", &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": []string{"https://evil.example"}},
	})
	require.Error(t, err)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
}

func TestDeliverMiddlewareRoutesWhatAHandlerAddresses(t *testing.T) {
	nodes := cluster(t, 2, wsroute.Config{})
	alice := nodes[0].connect(t, "alice")
	bob := nodes[1].connect(t, "bob")

	// A chat handler: "to:text" from a client becomes a message to "to".
	handler := nodes[0].Deliver(func(msg *message.Message) ([]*message.Message, error) {
		to, text, _ := strings.Cut(string(msg.Payload), ":")
		out := message.NewMessage(watermill.NewUUID(), []byte(msg.Metadata.Get(wsroute.MetadataFrom)+" says "+text))
		out.Metadata.Set(wsroute.MetadataToClient, to)
		passthrough := message.NewMessage(watermill.NewUUID(), []byte("audit"))
		return []*message.Message{out, passthrough}, nil
	})
	require.NoError(t, alice.Write(t.Context(), websocket.MessageText, []byte("bob:hi")))
	frame := <-nodes[0].inbound
	produced, err := handler(frame)
	require.NoError(t, err)
	require.Len(t, produced, 1, "addressed messages are routed, the rest passes on")
	assert.Equal(t, "audit", string(produced[0].Payload))
	assert.Equal(t, "alice says hi", read(t, bob))
}

func TestNodeComesBackAfterRedisLosesEverything(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	config := wsroute.Config{Prefix: "p:", NodeTTL: 300 * time.Millisecond}
	config.NodeID = "a"
	a := startNode(t, client, config)
	config.NodeID = "b"
	b := startNode(t, client, config)
	bob := b.connect(t, "bob")
	require.NoError(t, b.JoinWithInfo(t.Context(), "bob", "lobby", []byte("phone")))

	server.Restart(t) // no persistence: the registry is gone
	require.Eventually(t, func() bool {
		result, err := a.SendToClient(context.Background(), "bob", []byte("after the restart"))
		return err == nil && result.Status == wsroute.Delivered
	}, waitTimeout, 50*time.Millisecond, "node b re-registers bob")
	assert.Equal(t, "after the restart", read(t, bob))
	assert.Positive(t, b.Stats().RegistrationsRestored)
	require.Eventually(t, func() bool { // rooms are written after connections
		members, err := a.Presence(context.Background(), "lobby")
		return err == nil && len(members) == 1
	}, waitTimeout, 50*time.Millisecond, "node b writes bob's presence again")
	assert.Equal(t, []string{"bob: b phone"}, presence(t, a, "lobby"))
}

func TestCloseTellsClientsAndSendersAtOnce(t *testing.T) {
	nodes := cluster(t, 2, wsroute.Config{NodeTTL: time.Hour})
	bob := nodes[1].connect(t, "bob")
	require.NoError(t, nodes[1].Join(t.Context(), "bob", "room"))

	status := make(chan websocket.StatusCode, 1)
	go func() { // a client reads all the time
		for {
			if _, _, err := bob.Read(context.Background()); err != nil {
				status <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	require.NoError(t, nodes[1].Close())
	require.NoError(t, nodes[1].Close(), "Close is idempotent")
	assert.Equal(t, websocket.StatusGoingAway, <-status)
	result, err := nodes[0].SendToClient(t.Context(), "bob", []byte("?"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Offline, result.Status, "no need to wait for NodeTTL")
	result, err = nodes[0].Broadcast(t.Context(), "room", []byte("?"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Offline, result.Status)
	_, err = nodes[1].SendToClient(t.Context(), "bob", nil)
	assert.ErrorIs(t, err, wsroute.ErrClosed)
}

func TestNodeCloseLeaksNoGoroutine(t *testing.T) {
	client := pubsubtest.NewClient(t)
	require.NoError(t, client.Ping(t.Context()).Err())
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		// httptest's server goroutines end with t's cleanup, after this check.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))

	node, err := wsroute.NewNode(wsroute.Config{Client: client, Prefix: pubsubtest.Topic(t) + ":"}, nil)
	require.NoError(t, err)
	_, err = node.SendToClient(t.Context(), "nobody", []byte("x"))
	require.NoError(t, err)
	require.NoError(t, node.Close())
}

func TestAMessageRoutedAtRegistrationIsNotLost(t *testing.T) {
	// The node must know a connection before Redis can route to it.
	nodes := cluster(t, 2, wsroute.Config{})
	for i := range 30 {
		client := fmt.Sprintf("c%d", i)
		sent := make(chan string, 1)
		go func() {
			for k := 0; ; k++ {
				probe := fmt.Sprintf("probe %d", k)
				result, err := nodes[0].SendToClient(context.Background(), client, []byte(probe))
				if err != nil || result.Status == wsroute.Delivered {
					sent <- probe
					return
				}
			}
		}()
		ws := nodes[1].connect(t, client)
		first := <-sent
		for got := read(t, ws); got != first; got = read(t, ws) {
		}
	}
	assert.Zero(t, nodes[1].Stats().Fenced)
}
