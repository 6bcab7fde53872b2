package wsroute_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// capped starts n nodes sharing a registry, with a cap on connections per
// client, and returns them with the registry's client and key prefix.
func capped(t *testing.T, n, limit int) ([]*testNode, redis.UniversalClient, string) {
	client := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t) + ":"
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: fmt.Sprintf("node-%d", i), MaxConnectionsPerClient: limit})
	}
	return nodes, client, prefix
}

// dial opens a WebSocket as clientID without waiting for its registration.
func dial(t *testing.T, n *testNode, clientID string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, n.url+"?client="+clientID, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

// A client's connections are capped on all nodes together: one over the
// cap, on whichever node, is refused with StatusTooManyConnections, and
// the client's other connections, and other clients, are left alone.
func TestConnectionsPerClientAreCappedAcrossNodes(t *testing.T) {
	nodes, client, prefix := capped(t, 2, 3)
	bob := []*websocket.Conn{nodes[0].connect(t, "bob"), nodes[1].connect(t, "bob"), nodes[1].connect(t, "bob")}

	for _, node := range nodes {
		code, reason := closeReason(t, dial(t, node, "bob"))
		assert.Equal(t, wsroute.StatusTooManyConnections, code)
		assert.Equal(t, "too many connections: at most 3 per client", reason)
		assert.Equal(t, uint64(1), node.Stats().TooManyConnections)
	}
	result, err := nodes[0].SendToClient(t.Context(), "bob", []byte("to the three"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Result{Status: wsroute.Delivered, Nodes: 2}, result)
	for _, ws := range bob {
		assert.Equal(t, "to the three", read(t, ws))
	}
	nodes[0].connect(t, "alice")

	// Once one of bob's connections is gone from the registry, there is
	// room for another.
	require.NoError(t, bob[0].Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool {
		n, err := client.HLen(t.Context(), prefix+"client:bob").Result()
		return err == nil && n == 2
	}, waitTimeout, 5*time.Millisecond)
	nodes[0].connect(t, "bob")
}

// Nodes registering one client's connections at the same moment still
// keep to the cap: the registration script counts and writes in one step.
func TestConnectionCapHoldsWhenNodesRegisterAtOnce(t *testing.T) {
	const limit, dials = 4, 12
	nodes, client, prefix := capped(t, 2, limit)
	dialed := make(chan *websocket.Conn, dials)
	failed := make(chan error, dials)
	for i := range dials {
		go func() {
			ws, _, err := websocket.Dial(t.Context(), nodes[i%2].url+"?client=carol", nil)
			if err != nil {
				failed <- err
				return
			}
			dialed <- ws
		}()
	}
	outcomes := make(chan string, dials)
	for range dials {
		var ws *websocket.Conn
		select {
		case ws = <-dialed:
		case err := <-failed:
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.CloseNow() })
		go func() {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				outcomes <- fmt.Sprint(websocket.CloseStatus(err))
				return
			}
			outcomes <- string(data)
		}()
	}
	// Every refusal saw the cap reached, and entries are not removed
	// here: so once dials-limit are refused, exactly limit are registered.
	require.Eventually(t, func() bool {
		return nodes[0].Stats().TooManyConnections+nodes[1].Stats().TooManyConnections == dials-limit
	}, waitTimeout, 5*time.Millisecond)
	n, err := client.HLen(t.Context(), prefix+"client:carol").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(limit), n)

	_, err = nodes[0].SendToClient(t.Context(), "carol", []byte("hello, the ones let in"))
	require.NoError(t, err)
	counts := map[string]int{}
	for range dials {
		select {
		case outcome := <-outcomes:
			counts[outcome]++
		case <-time.After(waitTimeout):
			t.Fatalf("some connections neither got the message nor were refused: %v", counts)
		}
	}
	assert.Equal(t, map[string]int{"hello, the ones let in": limit, fmt.Sprint(wsroute.StatusTooManyConnections): dials - limit}, counts)
}

// A connection sending faster than InboundRate is closed with
// StatusRateLimited once its burst is spent; the frames within it are
// published, the one over it is not, and other connections are left alone.
func TestInboundRateLimitClosesAFloodingConnection(t *testing.T) {
	// A rate so low that no frame's worth comes back during the test:
	// the burst is all a connection has.
	node := startNode(t, pubsubtest.NewClient(t), wsroute.Config{Prefix: pubsubtest.Topic(t) + ":", InboundRate: 0.001, InboundBurst: 5})
	calm := node.connect(t, "calm")
	flood := node.connect(t, "flood") // its hello took one frame of the burst
	for i := range 5 {
		require.NoError(t, flood.Write(t.Context(), websocket.MessageText, []byte(fmt.Sprint(i))))
	}
	var published []string
	for range 4 {
		frame := <-node.inbound // in any order: Inbound is a Go channel pub/sub here
		frame.Ack()
		published = append(published, string(frame.Payload))
	}
	assert.ElementsMatch(t, []string{"0", "1", "2", "3"}, published)
	code, reason := closeReason(t, flood)
	assert.Equal(t, wsroute.StatusRateLimited, code)
	assert.Equal(t, "rate limit exceeded: too many frames", reason)
	stats := node.Stats()
	assert.Equal(t, uint64(1), stats.RateLimited)
	assert.Equal(t, uint64(2+4), stats.Inbound, "the frame over the limit is not published")

	require.NoError(t, calm.Write(t.Context(), websocket.MessageText, []byte("unaffected")))
	frame := <-node.inbound
	frame.Ack()
	assert.Equal(t, "unaffected", string(frame.Payload))
	assert.Equal(t, "calm", frame.Metadata.Get(wsroute.MetadataFrom))
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	client := pubsubtest.NewClient(t)
	for field, config := range map[string]wsroute.Config{
		"InboundRate":          {InboundRate: -1},
		"InboundBurst":         {InboundRate: 10, InboundBurst: -1},
		"PresenceEventsMaxLen": {PresenceEvents: true, PresenceEventsMaxLen: -1},
	} {
		config.Client = client
		_, err := wsroute.NewNode(config, nil)
		var configErr *redisbus.ConfigError
		require.ErrorAs(t, err, &configErr, field)
		assert.Equal(t, "wsroute.Config."+field, configErr.Field)
	}
	for _, rate := range []float64{math.NaN(), math.Inf(1)} {
		var configErr *redisbus.ConfigError
		require.ErrorAs(t, wsroute.Config{Client: client, InboundRate: rate}.Validate(), &configErr)
		assert.Equal(t, "wsroute.Config.InboundRate", configErr.Field)
	}
	err := wsroute.Config{Client: client, InboundBurst: 3}.Validate()
	assert.EqualError(t, err, "redisbus: invalid wsroute.Config.InboundBurst: is set, but InboundRate is 0 (no limit)")
	err = wsroute.Config{Client: client, PresenceEventsMaxLen: 100}.Validate()
	assert.EqualError(t, err, "redisbus: invalid wsroute.Config.PresenceEventsMaxLen: is set, but PresenceEvents is off")

	node := startNode(t, client, wsroute.Config{Prefix: pubsubtest.Topic(t) + ":"})
	authenticate := func(*http.Request) (string, error) { return "", errors.New("no") }
	for field, config := range map[string]wsroute.HandlerConfig{
		"Authenticate":   {},
		"MaxMessageSize": {Authenticate: authenticate, MaxMessageSize: -1},
		"PingInterval":   {Authenticate: authenticate, PingInterval: time.Millisecond},
		"PongTimeout":    {Authenticate: authenticate, PongTimeout: -time.Second},
	} {
		_, err := node.Handler(config)
		var configErr *redisbus.ConfigError
		require.ErrorAs(t, err, &configErr, field)
		assert.Equal(t, "wsroute.HandlerConfig."+field, configErr.Field)
	}
	_, err = node.Handler(wsroute.HandlerConfig{Authenticate: authenticate, PingInterval: -1})
	assert.NoError(t, err, "a negative PingInterval turns pings off")
}
