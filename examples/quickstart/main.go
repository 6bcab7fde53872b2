// Command quickstart is the README's Pub/Sub quick start as a complete
// program to copy: run it without arguments in one or more terminals to
// subscribe, and with arguments in another to publish them.
//
//	go run ./examples/quickstart            # a subscriber: prints what arrives, until Ctrl-C
//	go run ./examples/quickstart hi there   # a publisher: publishes "hi there" and exits
//
// It uses the Redis at REDIS_URL (redis://localhost:6379/0 when unset).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

const topic = "hello:world"

func main() {
	// Stop on Ctrl-C or SIGTERM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		redisURL = "redis://localhost:6379/0"
	}
	if err := run(ctx, os.Stdout, redisURL, os.Args[1:], nil); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run publishes args, or subscribes when there are none; subscribed, if
// not nil, is closed once the subscription is confirmed.
func run(ctx context.Context, out io.Writer, redisURL string, args []string, subscribed chan<- struct{}) error {
	options, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	// A Redis client. The Publisher and Subscriber never close it, so one
	// client can serve both (and the rest of your application).
	client := redis.NewClient(options)
	defer client.Close()
	logger := watermill.NopLogger{} // or watermill.NewStdLogger(false, false)

	if len(args) > 0 {
		return publish(ctx, out, client, logger, strings.Join(args, " "))
	}
	return subscribe(ctx, out, client, logger, subscribed)
}

func publish(ctx context.Context, out io.Writer, client *redis.Client, logger watermill.LoggerAdapter, text string) error {
	publisher, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, logger)
	if err != nil {
		return err
	}
	defer publisher.Close()
	// PublishCount says how many subscribers Redis delivered it to (0:
	// nobody listening; Pub/Sub keeps nothing). Publish does the same
	// without counting.
	receivers, err := publisher.PublishCount(ctx, topic, message.NewMessage(watermill.NewUUID(), []byte(text)))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "published %q to %d subscriber(s)\n", text, receivers)
	return nil
}

func subscribe(ctx context.Context, out io.Writer, client *redis.Client, logger watermill.LoggerAdapter, subscribed chan<- struct{}) error {
	subscriber, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, logger)
	if err != nil {
		return err
	}
	defer subscriber.Close() // after the Router: a Router closed by its context does not close it
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	router.AddConsumerHandler("greeter", topic, subscriber, func(msg *message.Message) error {
		fmt.Fprintf(out, "[%s] received: %s\n", topic, msg.Payload)
		return nil
	})

	// Run fails when a subscription does (Redis unreachable, refused):
	// wait for that as well as for Running, which then never comes.
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	select {
	case <-router.Running(): // subscribed: what is published from now on arrives
	case err := <-runErr:
		return err // the Router has stopped
	case <-ctx.Done():
		return router.Close()
	}
	fmt.Fprintf(out, "subscribed to %s; publish with: go run ./examples/quickstart hi there\n", topic)
	if subscribed != nil {
		close(subscribed)
	}
	// Until Ctrl-C: Run returns once ctx is done and its handlers finished.
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return router.Close()
}
