// Command cqrs runs Watermill's CQRS component over redisbus Streams: an
// EventBus publishes OrderPlaced events to a stream, and an EventProcessor
// runs two handlers, each in a consumer group of its own, so each sees
// every event and each can be scaled out to many processes.
//
//	go run ./examples/cqrs                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/cqrs
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/redisurl"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// OrderPlaced is the event.
type OrderPlaced struct {
	OrderID  int     `json:"order_id"`
	Customer string  `json:"customer"`
	Total    float64 `json:"total"`
}

func main() {
	if err := run(context.Background(), os.Stdout, os.Getenv("REDIS_URL"), "events"); err != nil {
		fmt.Fprintln(os.Stderr, "cqrs:", err)
		os.Exit(1)
	}
}

// run publishes three events and returns when both handlers saw them all.
// Topics are prefix + "." + the event name.
func run(ctx context.Context, out io.Writer, redisURL, prefix string) error {
	if redisURL == "" {
		embedded, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer embedded.Close()
		redisURL = "redis://" + embedded.Addr()
	}
	opt, err := redisurl.Parse(redisURL)
	if err != nil {
		return err
	}
	client := redis.NewClient(opt)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()

	marshaler := cqrs.JSONMarshaler{}
	topic := func(eventName string) string { return prefix + "." + eventName }

	publisher, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		return err
	}
	defer publisher.Close()
	eventBus, err := cqrs.NewEventBusWithConfig(publisher, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) {
			return topic(p.EventName), nil
		},
		Marshaler: marshaler,
	})
	if err != nil {
		return err
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, nil)
	if err != nil {
		return err
	}
	var subscribers []*redisbus.StreamsSubscriber
	defer func() {
		_ = router.Close()
		for _, s := range subscribers {
			_ = s.Close()
		}
	}()
	processor, err := cqrs.NewEventProcessorWithConfig(router, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return topic(p.EventName), nil
		},
		// One consumer group per handler: every handler gets every event,
		// and the processes running one handler share its events.
		SubscriberConstructor: func(p cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
				Client:        client,
				ConsumerGroup: prefix + "." + p.HandlerName,
			}, nil)
			if err == nil {
				subscribers = append(subscribers, sub)
			}
			return sub, err
		},
		Marshaler: marshaler,
	})
	if err != nil {
		return err
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	const events = 3
	wg.Add(2 * events)
	print := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format, args...)
	}
	err = processor.AddHandlers(
		cqrs.NewEventHandler("send-confirmation", func(ctx context.Context, e *OrderPlaced) error {
			print("send-confirmation: emailed %s about order %d\n", e.Customer, e.OrderID)
			wg.Done()
			return nil
		}),
		cqrs.NewEventHandler("sales-report", func(ctx context.Context, e *OrderPlaced) error {
			print("sales-report: order %d adds %.2f\n", e.OrderID, e.Total)
			wg.Done()
			return nil
		}),
	)
	if err != nil {
		return err
	}
	go func() { _ = router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-router.Running():
	case <-ctx.Done():
		return ctx.Err()
	}

	for i, customer := range []string{"ada", "grace", "linus"}[:events] {
		if err := eventBus.Publish(ctx, &OrderPlaced{OrderID: i + 1, Customer: customer, Total: float64(10 * (i + 1))}); err != nil {
			return err
		}
	}
	handled := make(chan struct{})
	go func() { wg.Wait(); close(handled) }()
	select {
	case <-handled:
		print("both handlers saw all %d events\n", events)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("handlers did not see every event: %w", ctx.Err())
	}
}
