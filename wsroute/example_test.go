package wsroute_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// newRedisClient connects the example to the tests' Redis. In your code:
// redis.NewClient(&redis.Options{Addr: "localhost:6379"}).
func newRedisClient() *redis.Client {
	client, err := pubsubtest.SharedClient()
	if err != nil {
		panic(err)
	}
	return client
}

// Two nodes of one service, as two servers behind a load balancer would run
// them: bob's WebSocket is connected to node B, and node A sends him a
// message without knowing where he is.
func ExampleNode() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()
	// A key prefix of its own for each run, so the example never meets the
	// clients of another run.
	prefix := "wsroute-example:" + watermill.NewShortUUID() + ":"

	nodeA, err := wsroute.NewNode(wsroute.Config{Client: client, NodeID: "a", Prefix: prefix}, nil)
	if err != nil {
		panic(err)
	}
	defer nodeA.Close()

	// Node B publishes what its clients send to Inbound, for a Router
	// handler to consume; here a Go channel.
	inbound := gochannel.NewGoChannel(gochannel.Config{}, nil)
	defer inbound.Close()
	frames, err := inbound.Subscribe(ctx, "wsroute.inbound")
	if err != nil {
		panic(err)
	}
	nodeB, err := wsroute.NewNode(wsroute.Config{Client: client, NodeID: "b", Prefix: prefix, Inbound: inbound}, nil)
	if err != nil {
		panic(err)
	}
	defer nodeB.Close()
	handler, err := nodeB.Handler(wsroute.HandlerConfig{
		// In your code: the user of the request's session cookie or token.
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("user"), nil },
	})
	if err != nil {
		panic(err)
	}
	server := httptest.NewServer(handler)
	defer server.Close()

	// bob connects to node B and says hello. Node B reads a connection's
	// frames once it has registered it, so the hello reaching Inbound means
	// bob can be reached from every node.
	bob, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(server.URL, "http")+"?user=bob", nil)
	if err != nil {
		panic(err)
	}
	defer bob.CloseNow()
	if err := bob.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		panic(err)
	}
	frame := <-frames
	frame.Ack()
	fmt.Printf("node B: %q from %s\n", frame.Payload, frame.Metadata.Get(wsroute.MetadataFrom))

	// Node A routes a message to bob through Redis, in one round trip.
	result, err := nodeA.SendToClient(ctx, "bob", []byte("hi bob, from node A"))
	if err != nil {
		panic(err)
	}
	fmt.Printf("node A: %s to %d node\n", result.Status, result.Nodes)

	_, data, err := bob.Read(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("bob: %s\n", data)
	// Output:
	// node B: "hello" from bob
	// node A: delivered to 1 node
	// bob: hi bob, from node A
}

// Who is in a room, on every node, and the joins and leaves as Watermill
// messages from a Redis stream.
func ExampleNode_Presence() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()
	prefix := "wsroute-example:" + watermill.NewShortUUID() + ":"

	config := wsroute.Config{Client: client, Prefix: prefix, PresenceEvents: true}
	config.NodeID = "a"
	nodeA, err := wsroute.NewNode(config, nil)
	if err != nil {
		panic(err)
	}
	defer nodeA.Close()
	inbound := gochannel.NewGoChannel(gochannel.Config{}, nil)
	defer inbound.Close()
	frames, err := inbound.Subscribe(ctx, "wsroute.inbound")
	if err != nil {
		panic(err)
	}
	config.NodeID, config.Inbound = "b", inbound
	nodeB, err := wsroute.NewNode(config, nil)
	if err != nil {
		panic(err)
	}
	defer nodeB.Close()
	handler, err := nodeB.Handler(wsroute.HandlerConfig{
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("user"), nil },
	})
	if err != nil {
		panic(err)
	}
	server := httptest.NewServer(handler)
	defer server.Close()

	// Joins and leaves, read as a Streams topic (here every one since the
	// start; a consumer group would share them among handlers).
	subscriber, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, StartID: "0"}, nil)
	if err != nil {
		panic(err)
	}
	defer subscriber.Close()
	events, err := subscriber.Subscribe(ctx, nodeA.PresenceTopic())
	if err != nil {
		panic(err)
	}

	// alice connects to node B and asks to join the lobby; node B's
	// handler of her frames joins her, with what others should see.
	alice, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(server.URL, "http")+"?user=alice", nil)
	if err != nil {
		panic(err)
	}
	defer alice.CloseNow()
	if err := alice.Write(ctx, websocket.MessageText, []byte("join lobby")); err != nil {
		panic(err)
	}
	frame := <-frames
	frame.Ack()
	from := frame.Metadata.Get(wsroute.MetadataFrom)
	if err := nodeB.JoinWithInfo(ctx, from, "lobby", []byte(`{"name":"Alice"}`)); err != nil {
		panic(err)
	}

	// Node A asks who is in the lobby.
	members, err := nodeA.Presence(ctx, "lobby")
	if err != nil {
		panic(err)
	}
	for _, m := range members {
		fmt.Printf("in the lobby: %s, %d connection on node %s: %s\n", m.ClientID, len(m.Connections), m.Connections[0].Node, m.Connections[0].Info)
	}

	msg := <-events
	msg.Ack()
	event, err := wsroute.ParsePresenceEvent(msg)
	if err != nil {
		panic(err)
	}
	fmt.Printf("event: %s %s %s on node %s\n", event.ClientID, event.Type, event.Room, event.Node)
	// Output:
	// in the lobby: alice, 1 connection on node b: {"name":"Alice"}
	// event: alice join lobby on node b
}
