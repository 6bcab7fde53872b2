// Package redisbusotel carries OpenTelemetry traces across redisbus: a span
// in a publishing goroutine continues in the handler that receives the
// message, on any node, through Pub/Sub or Streams.
//
// The trace context travels in the message's metadata as W3C Trace Context
// (traceparent, tracestate) and Baggage, which any Watermill Pub/Sub
// carries and any OpenTelemetry-aware consumer reads. Two pieces:
//
//   - [NewPublisher] (or [PublisherDecorator] for a Router's publishers)
//     starts a producer span per message, a child of the span in the
//     message's context (msg.SetContext), and writes it into the metadata;
//   - [Middleware] starts a consumer span in the handler, a child of the
//     one in the metadata, makes it the message's context, and hands it on
//     to the messages the handler produces.
//
// The package is separate so that an application that does not trace does
// not import OpenTelemetry, and pays nothing.
package redisbusotel

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Config configures tracing. The zero value uses the global tracer
// provider and W3C Trace Context with Baggage.
type Config struct {
	// TracerProvider makes the spans. Nil means otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Propagator writes and reads the context in metadata. Nil means W3C
	// Trace Context and Baggage (not the global propagator, which is a
	// no-op until an application sets one, so nothing would cross).
	Propagator propagation.TextMapPropagator
	// System names the messaging system in the spans' attributes. Empty
	// means "redis".
	System string
}

const instrumentation = "github.com/redisbus/watermill-redisbus/redisbusotel"

func (c Config) tracer() trace.Tracer {
	provider := c.TracerProvider
	if provider == nil {
		provider = otel.GetTracerProvider()
	}
	return provider.Tracer(instrumentation)
}

func (c Config) propagator() propagation.TextMapPropagator {
	if c.Propagator != nil {
		return c.Propagator
	}
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

func (c Config) system() string {
	if c.System != "" {
		return c.System
	}
	return "redis"
}

// MetadataCarrier lets a propagator read and write message metadata.
type MetadataCarrier message.Metadata

// Get returns the value of key.
func (m MetadataCarrier) Get(key string) string { return message.Metadata(m).Get(key) }

// Set stores value under key.
func (m MetadataCarrier) Set(key, value string) { message.Metadata(m).Set(key, value) }

// Keys lists the keys present.
func (m MetadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// tracingPublisher starts a producer span per message and injects it.
type tracingPublisher struct {
	message.Publisher
	config Config
	tracer trace.Tracer
}

// NewPublisher returns pub with tracing: each message published gets a
// producer span, the child of the span in its context, written into its
// metadata. The span ends when Publish returns, with its error.
func NewPublisher(pub message.Publisher, config Config) message.Publisher {
	return &tracingPublisher{Publisher: pub, config: config, tracer: config.tracer()}
}

// PublisherDecorator is NewPublisher for Router.AddPublisherDecorators.
func PublisherDecorator(config Config) message.PublisherDecorator {
	return func(pub message.Publisher) (message.Publisher, error) { return NewPublisher(pub, config), nil }
}

func (p *tracingPublisher) Publish(topic string, messages ...*message.Message) error {
	spans := make([]trace.Span, len(messages))
	for i, msg := range messages {
		ctx, span := p.tracer.Start(msg.Context(), "publish "+topic,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("messaging.system", p.config.system()),
				attribute.String("messaging.operation.type", "send"),
				attribute.String("messaging.destination.name", topic),
				attribute.String("messaging.message.id", msg.UUID),
			))
		p.config.propagator().Inject(ctx, MetadataCarrier(msg.Metadata))
		spans[i] = span
	}
	err := p.Publisher.Publish(topic, messages...)
	for _, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	return err
}

// Middleware continues the publisher's trace in a Router's handler: a
// consumer span, the child of the context in the message's metadata,
// becomes the message's context (so the handler's own spans and Redis
// calls join the trace) and the context of the messages the handler
// produces that have none of their own.
func Middleware(config Config) message.HandlerMiddleware {
	tracer := config.tracer()
	propagator := config.propagator()
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := propagator.Extract(msg.Context(), MetadataCarrier(msg.Metadata))
			topic := message.SubscribeTopicFromCtx(msg.Context())
			ctx, span := tracer.Start(ctx, "process "+topic,
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					attribute.String("messaging.system", config.system()),
					attribute.String("messaging.operation.type", "process"),
					attribute.String("messaging.destination.name", topic),
					attribute.String("messaging.message.id", msg.UUID),
					// The Router handler, not a consumer group: the middleware
					// cannot see the subscriber's group.
					attribute.String("watermill.handler.name", message.HandlerNameFromCtx(msg.Context())),
				))
			defer span.End()
			msg.SetContext(ctx)

			produced, err := h(msg)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			for _, out := range produced {
				if !trace.SpanContextFromContext(out.Context()).IsValid() {
					out.SetContext(trace.ContextWithSpan(out.Context(), span))
				}
			}
			return produced, err
		}
	}
}

// ErrNoTrace is returned by Extract when the metadata carries no trace.
var ErrNoTrace = errors.New("redisbusotel: no trace context in the metadata")

// Extract returns ctx with the span context carried in msg's metadata,
// for consumers that do not run in a Router (a plain Subscribe loop).
func Extract(ctx context.Context, msg *message.Message, config Config) (context.Context, error) {
	ctx = config.propagator().Extract(ctx, MetadataCarrier(msg.Metadata))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, ErrNoTrace
	}
	return ctx, nil
}
