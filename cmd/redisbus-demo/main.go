// Command redisbus-demo runs two nodes that talk through Redis with
// redisbus: each publishes greetings on a shared topic and prints what
// crosses from the other, and a foreign producer (a plain PUBLISH, as a PHP
// or Python service would send) joins in.
//
// Without REDIS_URL it starts an embedded Redis (miniredis) in-process, so
// it runs anywhere:
//
//	go run ./cmd/redisbus-demo
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./cmd/redisbus-demo -n 0   # until Ctrl-C
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

const topic = "demo:greetings"

func main() {
	count := flag.Int("n", 3, "greetings each node sends; 0 sends until interrupted")
	interval := flag.Duration("interval", 300*time.Millisecond, "time between a node's greetings")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, os.Getenv("REDIS_URL"), *count, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "redisbus-demo:", err)
		os.Exit(1)
	}
}

// run starts the nodes, lets them talk and returns when every node has
// received every greeting (or ctx is done).
func run(ctx context.Context, out io.Writer, redisURL string, count int, interval time.Duration) error {
	if redisURL == "" {
		embedded, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer embedded.Close()
		redisURL = "redis://" + embedded.Addr()
		fmt.Fprintf(out, "REDIS_URL is not set: using an embedded Redis at %s\n", embedded.Addr())
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}

	printer := &linePrinter{out: out}
	names := []string{"node-a", "node-b"}
	var nodes []*node
	for _, name := range names {
		n, err := startNode(ctx, name, opt, printer)
		if err != nil {
			return err
		}
		defer n.close()
		nodes = append(nodes, n)
	}
	printer.printf("both nodes subscribed to %q\n", topic)

	// Another language's producer: a bare PUBLISH with no envelope.
	foreign := redis.NewClient(opt)
	defer foreign.Close()
	if err := foreign.Publish(ctx, topic, "hello from a PHP service").Err(); err != nil {
		return err
	}
	expected := 1 // per node: the foreign greeting, then the other nodes'

	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		wg.Go(func() { errs <- n.greet(ctx, count, interval) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	if count == 0 {
		return nil // interrupted
	}

	expected += count * (len(nodes) - 1)
	for _, n := range nodes {
		if err := n.waitFor(ctx, expected); err != nil {
			return err
		}
	}
	printer.printf("done: each node received %d messages from elsewhere\n", expected)
	return nil
}

// node is one server of the demo: its own Redis client, Publisher and
// Subscriber, consuming through a Watermill Router as an application would.
type node struct {
	name       string
	client     *redis.Client
	publisher  *redisbus.Publisher
	subscriber *redisbus.Subscriber
	router     *message.Router
	printer    *linePrinter

	mu       sync.Mutex
	received int
	changed  chan struct{}
}

func startNode(ctx context.Context, name string, opt *redis.Options, printer *linePrinter) (*node, error) {
	client := redis.NewClient(opt)
	n := &node{name: name, client: client, printer: printer, changed: make(chan struct{}, 1)}

	var err error
	if n.publisher, err = redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil); err != nil {
		return nil, err
	}
	if n.subscriber, err = redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil); err != nil {
		return nil, err
	}
	// Subscribe before anyone publishes: a best-effort Pub/Sub delivers only
	// to subscribers connected at the time.
	if err := n.subscriber.SubscribeInitialize(topic); err != nil {
		return nil, err
	}
	if n.router, err = message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, watermill.NopLogger{}); err != nil {
		return nil, err
	}
	n.router.AddConsumerHandler(name, topic, n.subscriber, n.handle)
	go func() { _ = n.router.Run(ctx) }()
	select {
	case <-n.router.Running():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return n, nil
}

func (n *node) handle(msg *message.Message) error {
	from := msg.Metadata.Get("from")
	if from == n.name {
		return nil // our own greeting
	}
	if from == "" {
		from = "a non-Watermill producer"
	}
	n.printer.printf("%s received from %s: %s\n", n.name, from, msg.Payload)
	n.mu.Lock()
	n.received++
	n.mu.Unlock()
	select {
	case n.changed <- struct{}{}:
	default:
	}
	return nil
}

func (n *node) greet(ctx context.Context, count int, interval time.Duration) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for i := 1; count == 0 || i <= count; i++ {
		msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "greeting #%d from %s", i, n.name))
		msg.Metadata.Set("from", n.name)
		receivers, err := n.publisher.PublishCount(ctx, topic, msg)
		if err != nil {
			return err
		}
		n.printer.printf("%s published greeting #%d (Redis delivered it to %d subscribers)\n", n.name, i, receivers)
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (n *node) waitFor(ctx context.Context, messages int) error {
	deadline := time.After(10 * time.Second)
	for {
		n.mu.Lock()
		received := n.received
		n.mu.Unlock()
		if received >= messages {
			return nil
		}
		select {
		case <-n.changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s received %d of %d messages", n.name, received, messages)
		}
	}
}

func (n *node) close() {
	_ = n.router.Close()
	_ = n.subscriber.Close()
	_ = n.publisher.Close()
	_ = n.client.Close()
}

// linePrinter serialises output from the nodes' goroutines.
type linePrinter struct {
	mu  sync.Mutex
	out io.Writer
}

func (p *linePrinter) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format, args...)
}
