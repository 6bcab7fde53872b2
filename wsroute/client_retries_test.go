package wsroute_test

import (
	"context"
	"net/http"
	"net/http/httptest"
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

// A send that Redis routed but answered late is not routed again: go-redis
// would resend route.lua after its read timeout, and the client would get
// the frame twice.
func TestSendWithALateReplyIsNotRepeated(t *testing.T) {
	prefix := pubsubtest.Topic(t) + ":"
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	slowClient := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = slowClient.Close() })
	sender := startNode(t, slowClient, wsroute.Config{Prefix: prefix, NodeID: "sender"})
	holder := startNode(t, pubsubtest.NewClient(t), wsroute.Config{Prefix: prefix, NodeID: "holder"})
	bob := holder.connect(t, "bob")

	_, err := sender.SendToClient(t.Context(), "bob", []byte("warm-up"))
	require.NoError(t, err)
	require.Equal(t, "warm-up", read(t, bob))
	proxy.DelayOpenConnections(700 * time.Millisecond)
	t.Cleanup(func() { proxy.DelayOpenConnections(0) }) // before the nodes close

	_, err = sender.SendToClient(t.Context(), "bob", []byte("once"))
	require.Error(t, err, "the sender cannot know whether Redis routed it")
	// Redis delivers a node's messages in order: once the marker is in,
	// every copy routed before it is too.
	_, err = holder.SendToClient(context.Background(), "bob", []byte("marker"))
	require.NoError(t, err)
	copies := 0
	for frame := read(t, bob); frame != "marker"; frame = read(t, bob) {
		if frame == "once" {
			copies++
		}
	}
	assert.Equal(t, 1, copies)
}

// A node with a client connected closes within CloseTimeout when Redis
// stops answering, telling its clients, and says what it gave up.
func TestNodeCloseIsBoundedWhenRedisStopsAnswering(t *testing.T) {
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr()}) // go-redis' default timeouts
	t.Cleanup(func() { _ = client.Close() })
	const bound = 300 * time.Millisecond
	node, err := wsroute.NewNode(wsroute.Config{Client: client, Prefix: pubsubtest.Topic(t) + ":", CloseTimeout: bound}, nil)
	require.NoError(t, err)
	handler, err := node.Handler(wsroute.HandlerConfig{
		Authenticate: func(*http.Request) (string, error) { return "bob", nil },
	})
	require.NoError(t, err)
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	ws, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(server.URL, "http"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.CloseNow() })
	require.Eventually(t, func() bool { return node.Stats().Connections == 1 }, waitTimeout, time.Millisecond)

	proxy.Blackhole()
	closed := make(chan error, 1)
	go func() { closed <- node.Close() }()
	select {
	case err := <-closed:
		assert.Error(t, err, "Close says it gave up on Redis")
	case <-time.After(bound + 1500*time.Millisecond):
		t.Fatal("Close was not bounded by CloseTimeout")
	}
	assert.Equal(t, websocket.StatusGoingAway, closeStatus(t, ws))
}
