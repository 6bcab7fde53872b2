package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

// Two nodes on one Redis, twice (the second round finds what the first
// left, which must be nothing that matters): members of a room hear each
// other across nodes, and a client in no room, on the same node as a
// member, hears nothing said there.
func TestRoomMembersOnTwoNodesHearEachOther(t *testing.T) {
	t.Run("REDIS_URL", func(t *testing.T) {
		url := pubsubtest.Redis(t).URL
		for range 2 {
			chatAcrossNodes(t, url)
		}
	})
	t.Run("embedded Redis", func(t *testing.T) {
		for range 2 {
			chatAcrossNodes(t, "")
		}
	})
}

func chatAcrossNodes(t *testing.T, redisURL string) {
	nodes := startNodes(t, redisURL, 2)
	a, b := nodes[0], nodes[1]
	alice := dial(t, a, "alice")
	bob := dial(t, b, "bob")
	carol := dial(t, b, "carol") // bob's node, not in the lobby

	alice.send(Frame{Op: "join", Room: "lobby"})
	assert.Equal(t, Event{Kind: "joined", Room: "lobby", From: "alice", Node: a.id}, alice.next())
	bob.send(Frame{Op: "join", Room: "lobby"})
	assert.Equal(t, Event{Kind: "joined", Room: "lobby", From: "bob", Node: b.id}, bob.next())
	assert.Equal(t, Event{Kind: "joined", Room: "lobby", From: "bob", Node: b.id}, alice.next())
	carol.send(Frame{Op: "join", Room: "random"})
	assert.Equal(t, Event{Kind: "joined", Room: "random", From: "carol", Node: b.id}, carol.next())

	alice.send(Frame{Op: "say", Room: "lobby", Text: "hi bob"})
	fromAlice := Event{Kind: "message", Room: "lobby", From: "alice", Node: a.id, Text: "hi bob"}
	assert.Equal(t, fromAlice, bob.next(), "across nodes")
	assert.Equal(t, fromAlice, alice.next(), "the sender is a member too")
	bob.send(Frame{Op: "say", Room: "lobby", Text: "hi alice"})
	fromBob := Event{Kind: "message", Room: "lobby", From: "bob", Node: b.id, Text: "hi alice"}
	assert.Equal(t, fromBob, alice.next(), "across nodes")
	assert.Equal(t, fromBob, bob.next())

	// Had the lobby's messages reached carol, they would come before
	// this one: her node received them before alice sent it.
	alice.send(Frame{Op: "say", Room: "random", Text: "anyone here?"})
	assert.Equal(t, Event{Kind: "message", Room: "random", From: "alice", Node: a.id, Text: "anyone here?"}, carol.next(),
		"carol hears the room she is in, and nothing of the lobby")

	bob.send(Frame{Op: "leave", Room: "lobby"})
	leftLobby := Event{Kind: "left", Room: "lobby", From: "bob", Node: b.id}
	assert.Equal(t, leftLobby, bob.next())
	assert.Equal(t, leftLobby, alice.next())
	alice.send(Frame{Op: "say", Room: "lobby", Text: "bye"})
	assert.Equal(t, "bye", alice.next().Text)
	bob.send(Frame{Op: "dance", Room: "lobby"})
	assert.Equal(t, Event{Kind: "error", Text: "unknown op dance"}, bob.next(),
		"bob, out of the lobby, did not get alice's bye")
}

type testNode struct {
	id, url string
}

// startNodes runs the example with n nodes until the test ends, and
// returns them in the order of the addresses given.
func startNodes(t *testing.T, redisURL string, n int) []testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	// run writes its lines before it calls started, and nothing after.
	var out bytes.Buffer
	urls := make(chan []string, 1)
	done := make(chan error, 1)
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	go func() { done <- run(ctx, &out, redisURL, addrs, func(u []string) { urls <- u }) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	var started []string
	select {
	case started = <-urls:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	t.Log(out.String())
	var nodes []testNode
	for _, url := range started {
		node := testNode{url: url}
		for line := range strings.Lines(out.String()) {
			if id, ok := strings.CutSuffix(strings.TrimSpace(line), " serving "+url); ok {
				node.id = strings.TrimPrefix(id, "chat node ")
			}
		}
		require.NotEmpty(t, node.id, "a line names the node serving %s", url)
		nodes = append(nodes, node)
	}
	assert.Contains(t, out.String(), "open "+started[0]+" and "+started[1]+" in one browser tab each")
	return nodes
}

// client is a browser's side of the chat.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, node testNode, name string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(node.url, "http")+"/ws?name="+name, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.CloseNow() })
	return &client{t: t, ws: ws}
}

func (c *client) send(f Frame) {
	c.t.Helper()
	data, err := json.Marshal(f)
	require.NoError(c.t, err)
	require.NoError(c.t, c.ws.Write(c.t.Context(), websocket.MessageText, data))
}

func (c *client) next() Event {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	_, data, err := c.ws.Read(ctx)
	require.NoError(c.t, err)
	var e Event
	require.NoError(c.t, json.Unmarshal(data, &e))
	return e
}
