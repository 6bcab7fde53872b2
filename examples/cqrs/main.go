// Command cqrs runs Watermill's CQRS component over redisbus Streams: an
// EventBus publishes OrderPlaced events to a stream, and an EventProcessor
// runs two handlers, each in a consumer group of its own, so each sees
// every event and each can be scaled out to many processes.
//
//	go run ./examples/cqrs                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/cqrs
//
// It prints the same lines on every run:
//
//	send-confirmation: emailed ada about order 1
//	send-confirmation: emailed grace about order 2
//	send-confirmation: emailed linus about order 3
//	sales-report: order 1 adds 10.00
//	sales-report: order 2 adds 20.00
//	sales-report: order 3 adds 30.00
//	both handlers saw all 3 events
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Getenv("REDIS_URL")); err != nil {
		fmt.Fprintln(os.Stderr, "cqrs:", err)
		os.Exit(1)
	}
}

// run publishes three events, returns when both handlers saw them all, and
// deletes the streams it made.
func run(ctx context.Context, out io.Writer, redisURL string) error {
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

	// An application keeps its topics and consumer groups for good: a
	// group's position in its stream is what lets a handler restarted
	// tomorrow carry on where it stopped. This program only shows three
	// events and exits, so each run has topics and groups of its own, and
	// deletes their streams at the end (the groups go with them): every run
	// prints the same lines, and no key of yours is touched.
	prefix := "cqrs-example:" + watermill.NewShortUUID()
	var topicsMu sync.Mutex
	topics := map[string]bool{}
	topic := func(eventName string) string {
		name := prefix + "." + eventName
		topicsMu.Lock()
		topics[name] = true
		topicsMu.Unlock()
		return name
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		topicsMu.Lock()
		defer topicsMu.Unlock()
		for name := range topics {
			_ = client.Del(ctx, name, name+":dead").Err()
		}
	}()

	marshaler := cqrs.JSONMarshaler{}

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

	// The two handlers run concurrently, each seeing the events in order.
	// Each keeps what it did, printed handler by handler at the end, so
	// that every run prints the same lines.
	var mu sync.Mutex
	var wg sync.WaitGroup
	const events = 3
	wg.Add(2 * events)
	var confirmations, report []string
	record := func(lines *[]string, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		*lines = append(*lines, fmt.Sprintf(format, args...))
		wg.Done()
	}
	err = processor.AddHandlers(
		cqrs.NewEventHandler("send-confirmation", func(ctx context.Context, e *OrderPlaced) error {
			record(&confirmations, "send-confirmation: emailed %s about order %d", e.Customer, e.OrderID)
			return nil
		}),
		cqrs.NewEventHandler("sales-report", func(ctx context.Context, e *OrderPlaced) error {
			record(&report, "sales-report: order %d adds %.2f", e.OrderID, e.Total)
			return nil
		}),
	)
	if err != nil {
		return err
	}
	// Run fails when a subscription does (Redis unreachable, refused):
	// wait for that too, not only for Running, which then never comes.
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-router.Running():
	case err := <-runErr:
		return fmt.Errorf("the event processor cannot start: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("the event processor did not start in time (is Redis reachable?): %w", ctx.Err())
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
		mu.Lock()
		defer mu.Unlock()
		for _, line := range append(confirmations, report...) {
			fmt.Fprintln(out, line)
		}
		fmt.Fprintf(out, "both handlers saw all %d events\n", events)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("handlers did not see every event: %w", ctx.Err())
	}
}
