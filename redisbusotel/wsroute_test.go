package redisbusotel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/redisbusotel"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// A service publishes a notification addressed to a WebSocket client; the
// node that routes it (wsroute's DeliveryHandler in a Router) continues the
// publisher's trace, and the client, connected to that node, receives it.
func TestTraceReachesTheWebSocketDeliveryHandler(t *testing.T) {
	a, b := newNode(t), newNode(t)
	topic := pubsubtest.Topic(t)
	client := pubsubtest.NewClient(t)

	frames := gochannel.NewGoChannel(gochannel.Config{}, nil)
	t.Cleanup(func() { _ = frames.Close() })
	node, err := wsroute.NewNode(wsroute.Config{Client: client, Prefix: topic + ":", Inbound: frames, InboundTopic: "frames"}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = node.Close() })
	handler, err := node.Handler(wsroute.HandlerConfig{
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("client"), nil },
	})
	require.NoError(t, err)
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	ws, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(server.URL, "http")+"?client=bob", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.CloseNow() })
	require.Eventually(t, func() bool { return node.Stats().Connections == 1 }, waitTimeout, time.Millisecond)

	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: pubsubtest.NewClient(t), ConsumerGroup: "ws"}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	router.AddMiddleware(redisbusotel.Middleware(b.config))
	router.AddConsumerHandler("deliver", topic, sub, node.DeliveryHandler())
	go func() { _ = router.Run(context.Background()) }()
	t.Cleanup(func() { _ = router.Close() })
	<-router.Running()

	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: pubsubtest.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	ctx, request := a.provider.Tracer("app").Start(context.Background(), "request")
	msg := message.NewMessage(watermill.NewUUID(), []byte("your order shipped"))
	msg.Metadata.Set(wsroute.MetadataToClient, "bob")
	msg.SetContext(ctx)
	require.NoError(t, redisbusotel.NewPublisher(pub, a.config).Publish(topic, msg))
	request.End()

	_, data, err := ws.Read(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "your order shipped", string(data))
	process := b.span(t, "process "+topic)
	assert.Equal(t, request.SpanContext().TraceID(), process.SpanContext().TraceID())
	assert.Equal(t, a.span(t, "publish "+topic).SpanContext().SpanID(), process.Parent().SpanID())
}
