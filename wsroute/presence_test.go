package wsroute_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// presenceEvents reads node's presence events, from the start of the
// stream, as a Watermill user would: with a Streams subscriber (fan-out).
type presenceEvents struct{ messages <-chan *message.Message }

func subscribePresence(t *testing.T, client redis.UniversalClient, node *testNode) *presenceEvents {
	t.Helper()
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, StartID: "0"}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	messages, err := sub.Subscribe(context.Background(), node.PresenceTopic())
	require.NoError(t, err)
	return &presenceEvents{messages: messages}
}

// next returns the next event.
func (e *presenceEvents) next(t *testing.T) wsroute.PresenceEvent {
	t.Helper()
	select {
	case msg := <-e.messages:
		msg.Ack()
		event, err := wsroute.ParsePresenceEvent(msg)
		require.NoError(t, err)
		return event
	case <-time.After(waitTimeout):
		t.Fatal("no presence event came")
	}
	return wsroute.PresenceEvent{}
}

// nothingBefore checks that the next event is the join a marker client
// makes now in a room of its own: nothing else was recorded before it.
func (e *presenceEvents) nothingBefore(t *testing.T, node *testNode) {
	t.Helper()
	marker := "marker-" + strings.ReplaceAll(t.Name(), "/", "-")
	node.connect(t, marker)
	require.NoError(t, node.Join(t.Context(), marker, marker))
	assert.Equal(t, wsroute.PresenceEvent{Type: wsroute.PresenceJoin, Room: marker, ClientID: marker, Node: node.ID()}, e.next(t))
}

func joined(room, client, node, info string) wsroute.PresenceEvent {
	e := wsroute.PresenceEvent{Type: wsroute.PresenceJoin, Room: room, ClientID: client, Node: node}
	if info != "" {
		e.Info = []byte(info)
	}
	return e
}

func left(room, client, node, reason string) wsroute.PresenceEvent {
	return wsroute.PresenceEvent{Type: wsroute.PresenceLeave, Room: room, ClientID: client, Node: node, Reason: reason}
}

// presence returns who is in room as "client: node info, node info".
func presence(t *testing.T, node *testNode, room string) []string {
	t.Helper()
	members, err := node.Presence(t.Context(), room)
	require.NoError(t, err)
	out := []string{}
	seen := map[string]bool{}
	for _, m := range members {
		var conns []string
		for _, c := range m.Connections {
			require.NotEmpty(t, c.ID)
			require.False(t, seen[c.ID], "connection %s listed twice", c.ID)
			seen[c.ID] = true
			conns = append(conns, strings.TrimSpace(c.Node+" "+string(c.Info)))
		}
		out = append(out, m.ClientID+": "+strings.Join(conns, ", "))
	}
	return out
}

// Presence lists every client in a room with its connections there, on
// every node, with the info each joined with; connections that leave or
// close are gone from it, and clients that never joined are not in it.
func TestPresenceShowsEveryConnectionOnEveryNode(t *testing.T) {
	nodes := cluster(t, 3, wsroute.Config{})
	nodes[0].connect(t, "alice") // two tabs of a laptop
	tab := nodes[0].connect(t, "alice")
	nodes[1].connect(t, "alice") // a phone
	nodes[1].connect(t, "bob")
	nodes[2].connect(t, "carol")

	assert.Empty(t, presence(t, nodes[2], "lobby"))
	require.NoError(t, nodes[0].JoinWithInfo(t.Context(), "alice", "lobby", []byte("laptop")))
	require.NoError(t, nodes[1].JoinWithInfo(t.Context(), "alice", "lobby", []byte("phone")))
	require.NoError(t, nodes[1].Join(t.Context(), "bob", "lobby"))
	require.NoError(t, nodes[2].Join(t.Context(), "carol", "kitchen"))
	assert.Equal(t, []string{"alice: node-0 laptop, node-0 laptop, node-1 phone", "bob: node-1"}, presence(t, nodes[2], "lobby"))
	assert.Equal(t, []string{"carol: node-2"}, presence(t, nodes[0], "kitchen"))

	require.NoError(t, nodes[1].JoinWithInfo(t.Context(), "bob", "lobby", []byte("away")), "joining again")
	require.NoError(t, tab.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { // the closed tab leaves right after the node sees it close
		return len(presence(t, nodes[2], "lobby")) == 2 && presence(t, nodes[2], "lobby")[0] == "alice: node-0 laptop, node-1 phone"
	}, waitTimeout, 5*time.Millisecond)
	assert.Equal(t, []string{"alice: node-0 laptop, node-1 phone", "bob: node-1 away"}, presence(t, nodes[2], "lobby"))

	require.NoError(t, nodes[1].Leave(t.Context(), "bob", "lobby"))
	require.NoError(t, nodes[1].Leave(t.Context(), "alice", "lobby"))
	assert.Equal(t, []string{"alice: node-0 laptop"}, presence(t, nodes[2], "lobby"))

	err := nodes[0].JoinWithInfo(t.Context(), "alice", "lobby", make([]byte, wsroute.MaxPresenceInfoSize+1))
	require.ErrorIs(t, err, wsroute.ErrPresenceInfoTooBig)
	assert.EqualError(t, err, "wsroute: presence info is over MaxPresenceInfoSize: 1025 bytes, at most 1024")
	assert.Equal(t, []string{"alice: node-0 laptop"}, presence(t, nodes[2], "lobby"), "a refused join changes nothing")
}

// A client's joins and leaves are recorded once in the cluster: when its
// first connection in the room joins, on whichever node, and when its last
// one leaves or closes; not for the connections in between, and not once
// per node, even when two nodes join or leave the same client at once.
func TestPresenceEventsAreRecordedOncePerClient(t *testing.T) {
	client := pubsubtest.NewClient(t)
	nodes := cluster(t, 2, wsroute.Config{PresenceEvents: true, NodeTTL: 300 * time.Millisecond}) // both sweep often
	events := subscribePresence(t, client, nodes[0])
	nodes[0].connect(t, "alice")
	phone := nodes[1].connect(t, "alice")

	require.NoError(t, nodes[0].JoinWithInfo(t.Context(), "alice", "lobby", []byte("laptop")))
	assert.Equal(t, joined("lobby", "alice", "node-0", "laptop"), events.next(t))
	require.NoError(t, nodes[1].JoinWithInfo(t.Context(), "alice", "lobby", []byte("phone")))
	require.NoError(t, nodes[0].Leave(t.Context(), "alice", "lobby"))
	require.NoError(t, phone.Close(websocket.StatusNormalClosure, "")) // her last connection in the room
	assert.Equal(t, left("lobby", "alice", "node-1", wsroute.ReasonLeft), events.next(t))
	require.NoError(t, nodes[0].Join(t.Context(), "alice", "lobby"))
	assert.Equal(t, joined("lobby", "alice", "node-0", ""), events.next(t))
	require.NoError(t, nodes[0].Leave(t.Context(), "alice", "lobby"))
	assert.Equal(t, left("lobby", "alice", "node-0", wsroute.ReasonLeft), events.next(t))

	nodes[0].connect(t, "bob")
	nodes[1].connect(t, "bob")
	for _, do := range []func(*testNode) error{
		func(n *testNode) error { return n.Join(context.Background(), "bob", "lobby") },
		func(n *testNode) error { return n.Leave(context.Background(), "bob", "lobby") },
	} {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() { assert.NoError(t, do(n)) })
		}
		wg.Wait()
		event := events.next(t)
		assert.Equal(t, "bob", event.ClientID)
	}
	events.nothingBefore(t, nodes[1])
}

// doomedNode starts a node on a Redis client of its own, so that the test
// can kill it as SIGKILL would: kill closes the client, the node stops
// renewing its liveness and removes nothing, and its liveness key expires
// NodeTTL later. kill returns once it has.
func doomedNode(t *testing.T, admin redis.UniversalClient, config wsroute.Config) (node *testNode, kill func()) {
	t.Helper()
	own := redis.NewClient(admin.(*redis.Client).Options())
	node = startNode(t, own, config)
	return node, func() {
		t.Helper()
		require.NoError(t, own.Close())
		require.Eventually(t, func() bool {
			n, err := admin.Exists(context.Background(), config.Prefix+"node:"+config.NodeID).Result()
			return err == nil && n == 0
		}, waitTimeout, 5*time.Millisecond, "the dead node's liveness key does not expire")
	}
}

// When a node dies, its members are out of Presence as soon as its
// liveness key expires (NodeTTL), and the query that finds them records
// their leaves; a client still connected on another node stays.
func TestPresenceForgetsADeadNodesMembers(t *testing.T) {
	client := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t) + ":"
	// The watcher sweeps every 20 minutes: here only its queries notice.
	watcher := startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "watcher", NodeTTL: time.Hour, PresenceEvents: true})
	doomed, kill := doomedNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "doomed", NodeTTL: 300 * time.Millisecond, PresenceEvents: true})
	events := subscribePresence(t, client, watcher)
	watcher.connect(t, "alice")
	doomed.connect(t, "alice")
	doomed.connect(t, "bob")
	require.NoError(t, watcher.Join(t.Context(), "alice", "lobby"))
	require.NoError(t, doomed.Join(t.Context(), "alice", "lobby"))
	require.NoError(t, doomed.JoinWithInfo(t.Context(), "bob", "lobby", []byte("phone")))
	assert.Equal(t, joined("lobby", "alice", "watcher", ""), events.next(t))
	assert.Equal(t, joined("lobby", "bob", "doomed", "phone"), events.next(t))
	assert.Equal(t, []string{"alice: doomed, watcher", "bob: doomed phone"}, presence(t, watcher, "lobby"))

	kill()
	reaped := watcher.Stats().Reaped
	assert.Equal(t, []string{"alice: watcher"}, presence(t, watcher, "lobby"))
	assert.Equal(t, reaped+2, watcher.Stats().Reaped, "the query removed the dead node's two entries")
	assert.Equal(t, left("lobby", "bob", "doomed", wsroute.ReasonNodeGone), events.next(t))
	assert.Equal(t, []string{"alice: watcher"}, presence(t, watcher, "lobby"))
	events.nothingBefore(t, watcher)
}

// A dead node's members leave, and their leaves are recorded, even in
// rooms nobody asks about: the nodes sweep the presence of dead nodes.
// With two nodes sweeping and a third asking at the same time, each leave
// is recorded once.
func TestSweepRecordsTheLeavesOfADeadNodesMembers(t *testing.T) {
	client := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t) + ":"
	config := wsroute.Config{Prefix: prefix, NodeTTL: 300 * time.Millisecond, PresenceEvents: true} // sweeps every 100 ms
	config.NodeID = "sweeper-1"
	sweeper := startNode(t, client, config)
	config.NodeID = "sweeper-2"
	startNode(t, client, config)
	config.NodeID = "doomed"
	doomed, kill := doomedNode(t, client, config)
	events := subscribePresence(t, client, sweeper)
	doomed.connect(t, "bob")
	doomed.connect(t, "carol")
	for _, join := range [][2]string{{"bob", "lobby"}, {"bob", "kitchen"}, {"carol", "lobby"}} {
		require.NoError(t, doomed.Join(t.Context(), join[0], join[1]))
		assert.Equal(t, joined(join[1], join[0], "doomed", ""), events.next(t))
	}

	asking := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-asking:
				return
			default:
			}
			_, err := sweeper.Presence(context.Background(), "lobby")
			assert.NoError(t, err)
		}
	})
	stopAsking := sync.OnceFunc(func() {
		close(asking)
		wg.Wait()
	})
	defer stopAsking() // before the nodes close, should the test fail
	kill()
	var leaves []wsroute.PresenceEvent
	for range 3 {
		leaves = append(leaves, events.next(t))
	}
	stopAsking()
	assert.ElementsMatch(t, []wsroute.PresenceEvent{
		left("lobby", "bob", "doomed", wsroute.ReasonNodeGone),
		left("kitchen", "bob", "doomed", wsroute.ReasonNodeGone),
		left("lobby", "carol", "doomed", wsroute.ReasonNodeGone),
	}, leaves)
	events.nothingBefore(t, sweeper)
	assert.Empty(t, presence(t, sweeper, "kitchen"))

	// The sweep leaves no trace of the dead node: not in the rooms'
	// node lists, and not in the list of node incarnations to sweep.
	require.Eventually(t, func() bool {
		nodes, err := client.HVals(t.Context(), prefix+"incarnations").Result()
		return err == nil && !slices.Contains(nodes, "doomed")
	}, waitTimeout, 5*time.Millisecond)
	for _, room := range []string{"lobby", "kitchen"} {
		exists, err := client.HExists(t.Context(), prefix+"room:"+room, "doomed").Result()
		require.NoError(t, err)
		assert.False(t, exists, "room %s still lists the dead node", room)
	}
}

// presenceFault is a go-redis hook that makes the next join or leave
// script (told apart by their number of keys: 7 and 3) fail, either before
// Redis runs it or after (its reply lost, as when a connection breaks),
// and reports those that succeed.
type presenceFault struct {
	passThroughHooks
	keys      int
	afterRun  bool
	armed     atomic.Bool
	succeeded chan struct{}
}

func (h *presenceFault) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		script := (cmd.Name() == "evalsha" || cmd.Name() == "eval") && len(args) > 3 &&
			fmt.Sprint(args[2]) == strconv.Itoa(h.keys) && strings.Contains(fmt.Sprint(args[3]), ":presence:")
		if !script {
			return next(ctx, cmd)
		}
		if h.armed.Load() {
			if h.afterRun {
				if err := next(ctx, cmd); redis.HasErrorPrefix(err, "NOSCRIPT") {
					return err // go-redis sends it again with EVAL
				}
			}
			h.armed.Store(false)
			err := errors.New("injected: the connection to Redis broke")
			cmd.SetErr(err)
			return err
		}
		err := next(ctx, cmd)
		if err == nil {
			select {
			case h.succeeded <- struct{}{}:
			default:
			}
		}
		return err
	}
}

// When Redis misses a join or a leave (the command lost on the way, or its
// reply), the room's presence ends up as if the call had not happened (a
// join) or had (a leave), and no join or leave is recorded twice: a failed
// join is taken back at once, a failed leave sent again until Redis takes
// it.
func TestPresenceWhenRedisMissesAJoinOrALeave(t *testing.T) {
	for _, tc := range []struct {
		name     string
		keys     int
		afterRun bool
		events   []wsroute.PresenceEvent
	}{
		{"join lost", 7, false, nil},
		{"join reply lost", 7, true, []wsroute.PresenceEvent{
			joined("lobby", "bob", "n", ""), left("lobby", "bob", "n", wsroute.ReasonLeft),
		}},
		{"leave lost", 3, false, []wsroute.PresenceEvent{left("lobby", "bob", "n", wsroute.ReasonLeft)}},
		{"leave reply lost", 3, true, []wsroute.PresenceEvent{left("lobby", "bob", "n", wsroute.ReasonLeft)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admin := pubsubtest.NewClient(t)
			fault := &presenceFault{keys: tc.keys, afterRun: tc.afterRun, succeeded: make(chan struct{}, 16)}
			faulty := redis.NewClient(admin.Options())
			faulty.AddHook(fault)
			t.Cleanup(func() { _ = faulty.Close() })
			// Failed leaves are sent again every 100 ms (NodeTTL/3).
			node := startNode(t, faulty, wsroute.Config{Prefix: pubsubtest.Topic(t) + ":", NodeID: "n", NodeTTL: 300 * time.Millisecond, PresenceEvents: true})
			events := subscribePresence(t, admin, node)
			node.connect(t, "bob")

			if tc.keys == 7 {
				fault.armed.Store(true)
				require.Error(t, node.Join(t.Context(), "bob", "lobby"))
			} else {
				require.NoError(t, node.Join(t.Context(), "bob", "lobby"))
				assert.Equal(t, joined("lobby", "bob", "n", ""), events.next(t))
				for len(fault.succeeded) > 0 {
					<-fault.succeeded
				}
				fault.armed.Store(true)
				require.Error(t, node.Leave(t.Context(), "bob", "lobby"))
				select {
				case <-fault.succeeded: // sent again, and taken
				case <-time.After(waitTimeout):
					t.Fatal("the leave was not sent again")
				}
			}
			assert.Empty(t, presence(t, node, "lobby"))
			for _, want := range tc.events {
				assert.Equal(t, want, events.next(t))
			}
			events.nothingBefore(t, node)
		})
	}
}
