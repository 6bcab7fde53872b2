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
