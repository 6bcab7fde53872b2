package redisbusotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/redisbusotel"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

const waitTimeout = 10 * time.Second

// node is what one process has: its own Redis client and tracer provider.
type node struct {
	spans    *tracetest.SpanRecorder
	provider *sdktrace.TracerProvider
	config   redisbusotel.Config
}

func newNode(t *testing.T) *node {
	spans := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	return &node{spans: spans, provider: provider, config: redisbusotel.Config{TracerProvider: provider}}
}

func (n *node) span(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	require.Eventually(t, func() bool {
		for _, s := range n.spans.Ended() {
			if s.Name() == name {
				found = s
				return true
			}
		}
		return false
	}, waitTimeout, time.Millisecond, "no span %q", name)
	return found
}

// router runs on b a handler of topic with the tracing middleware; the
// handler starts a span of its own, as application code would, and may
// produce a message to forward.
func (n *node) router(t *testing.T, sub message.Subscriber, topic string, forward string, pub message.Publisher) {
	t.Helper()
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	router.AddMiddleware(redisbusotel.Middleware(n.config))
	router.AddPublisherDecorators(redisbusotel.PublisherDecorator(n.config))
	handle := func(msg *message.Message) ([]*message.Message, error) {
		_, span := n.provider.Tracer("app").Start(msg.Context(), "handle "+topic)
		span.End()
		if forward == "" {
			return nil, nil
		}
		return []*message.Message{message.NewMessage(watermill.NewUUID(), msg.Payload)}, nil
	}
	if forward == "" {
		router.AddConsumerHandler("handler-"+topic, topic, sub, func(msg *message.Message) error { _, err := handle(msg); return err })
	} else {
		router.AddHandler("handler-"+topic, topic, sub, forward, pub, handle)
	}
	go func() { _ = router.Run(context.Background()) }()
	t.Cleanup(func() { _ = router.Close() })
	<-router.Running()
}

// publishInRequest publishes from inside a span, as a request handler
// would, and returns that span's context.
func (n *node) publishInRequest(t *testing.T, pub message.Publisher, topic string) trace.SpanContext {
	t.Helper()
	ctx, request := n.provider.Tracer("app").Start(context.Background(), "request")
	msg := message.NewMessage(watermill.NewUUID(), []byte("order"))
	msg.SetContext(ctx)
	require.NoError(t, redisbusotel.NewPublisher(pub, n.config).Publish(topic, msg))
	request.End()
	return request.SpanContext()
}

// assertContinues checks the chain request → publish (on a) → process →
// the handler's own span (on b), all in one trace.
func assertContinues(t *testing.T, a, b *node, request trace.SpanContext, topic string) {
	t.Helper()
	publish := a.span(t, "publish "+topic)
	process := b.span(t, "process "+topic)
	handle := b.span(t, "handle "+topic)
	assert.Equal(t, request.SpanID(), publish.Parent().SpanID())
	assert.Equal(t, trace.SpanKindProducer, publish.SpanKind())
	assert.Equal(t, publish.SpanContext().SpanID(), process.Parent().SpanID(), "the handler's span continues the publisher's")
	assert.True(t, process.Parent().IsRemote())
	assert.Equal(t, trace.SpanKindConsumer, process.SpanKind())
	assert.Equal(t, process.SpanContext().SpanID(), handle.Parent().SpanID(), "the handler's own spans join the trace")
	for _, s := range []sdktrace.ReadOnlySpan{publish, process, handle} {
		assert.Equal(t, request.TraceID(), s.SpanContext().TraceID())
	}
}

func TestTraceCrossesPubSub(t *testing.T) {
	a, b := newNode(t), newNode(t)
	topic := pubsubtest.Topic(t)
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: pubsubtest.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	b.router(t, sub, topic, "", nil)
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: pubsubtest.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	assertContinues(t, a, b, a.publishInRequest(t, pub, topic), topic)
}

// Through Streams, and on through a message the handler produces: the
// third hop is still the same trace.
func TestTraceCrossesStreamsAndHandlerOutput(t *testing.T) {
	a, b, c := newNode(t), newNode(t), newNode(t)
	topic, next := pubsubtest.Topic(t), pubsubtest.Topic(t)+"-next"
	newSub := func() *redisbus.StreamsSubscriber {
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: pubsubtest.NewClient(t), ConsumerGroup: "g"}, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Close() })
		return sub
	}
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: pubsubtest.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	b.router(t, newSub(), topic, next, pub)
	c.router(t, newSub(), next, "", nil)

	request := a.publishInRequest(t, pub, topic)
	assertContinues(t, a, b, request, topic)
	forwarded := b.span(t, "publish "+next)
	assert.Equal(t, b.span(t, "process "+topic).SpanContext().SpanID(), forwarded.Parent().SpanID())
	third := c.span(t, "process "+next)
	assert.Equal(t, forwarded.SpanContext().SpanID(), third.Parent().SpanID())
	assert.Equal(t, request.TraceID(), third.SpanContext().TraceID())
}

// A plain Subscribe loop reads the context with Extract.
func TestExtractWithoutARouter(t *testing.T) {
	a := newNode(t)
	topic := pubsubtest.Topic(t)
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: pubsubtest.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: pubsubtest.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	request := a.publishInRequest(t, pub, topic)
	msg := <-messages
	msg.Ack()
	ctx, err := redisbusotel.Extract(context.Background(), msg, redisbusotel.Config{})
	require.NoError(t, err)
	assert.Equal(t, request.TraceID(), trace.SpanContextFromContext(ctx).TraceID())
	assert.Equal(t, a.span(t, "publish "+topic).SpanContext().SpanID(), trace.SpanContextFromContext(ctx).SpanID())

	_, err = redisbusotel.Extract(context.Background(), message.NewMessage(watermill.NewUUID(), nil), redisbusotel.Config{})
	assert.ErrorIs(t, err, redisbusotel.ErrNoTrace)
}
