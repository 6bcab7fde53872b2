// Command workqueue processes orders on Redis Streams: orders are published
// reliably, two workers in one consumer group share them (each takes an
// order only when it is about to start it), and a failing order is retried
// with backoff and, after MaxDeliveries attempts, moved to the topic's
// dead-letter stream (the topic's name + ":dead").
//
//	go run ./examples/workqueue                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/workqueue
//
// It prints the same lines on every run:
//
//	publishing 10 orders to 2 workers; order 2 has a negative amount
//	order 2 failed (attempt 1 of 3): amount must be positive
//	order 2 failed (attempt 2 of 3): amount must be positive
//	order 2 failed (attempt 3 of 3): amount must be positive
//	dead letter: {"id":2,"amount":-5} (nacked 3 times (MaxDeliveries 3))
//	processed order 1: charged 19.99
//	processed order 3: charged 42.00
//	...
//	processed order 10: charged 100.00
//	both workers took a share of the orders
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/redisurl"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Order is what the shop publishes.
type Order struct {
	ID     int     `json:"id"`
	Amount float64 `json:"amount"`
}

// The queue's consumer group and workers.
const (
	group         = "order-processors"
	maxDeliveries = 3
)

var workerNames = []string{"worker-1", "worker-2"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Getenv("REDIS_URL")); err != nil {
		fmt.Fprintln(os.Stderr, "workqueue:", err)
		os.Exit(1)
	}
}

// run publishes one batch of orders, waits until each is processed or
// dead-lettered, prints the outcome and deletes what it created in Redis.
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

	// A real work queue keeps one stream name for good: its backlog,
	// pending entries and dead letters must outlive every process, so that
	// what one run leaves is done by the next. This program only shows one
	// batch and exits, so each run works on a stream of its own and deletes
	// it at the end: every run starts from an empty queue and prints the
	// same thing, and no key of yours (an "orders" stream, say) is touched.
	topic := "workqueue-example:" + watermill.NewShortUUID() + ":orders"
	defer deleteQueue(client, topic)

	orders := []Order{{ID: 1, Amount: 19.99}, {ID: 2, Amount: -5}, {ID: 3, Amount: 42}}
	for id := 4; id <= 10; id++ {
		orders = append(orders, Order{ID: id, Amount: float64(id) * 10})
	}
	q, err := startWorkers(ctx, client, topic, out)
	if err != nil {
		return err
	}
	defer q.close()

	publisher, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		return err
	}
	defer publisher.Close()
	q.printf("publishing %d orders to %d workers; order 2 has a negative amount\n", len(orders), len(workerNames))
	for _, order := range orders {
		payload, _ := json.Marshal(order)
		// Stored in Redis once Publish returns.
		if err := publisher.Publish(topic, message.NewMessageWithContext(ctx, watermill.NewUUID(), payload)); err != nil {
			return err
		}
	}

	// Every order ends processed or dead-lettered.
	if err := q.waitFor(ctx, len(orders)); err != nil {
		return err
	}
	dead, err := client.XRange(ctx, topic+":dead", "-", "+").Result()
	if err != nil {
		return err
	}
	for _, entry := range dead {
		q.printf("dead letter: %s (%s)\n", entry.Values[redisbus.StreamsFieldPayload], entry.Values[redisbus.DeadLetterFieldReason])
	}
	// Workers run concurrently; the orders they processed are printed in
	// order of ID, so that every run prints the same lines.
	for _, p := range q.processedOrders() {
		q.printf("processed order %d: charged %.2f\n", p.order.ID, p.order.Amount)
	}
	if q.everyWorkerTookSome() {
		q.printf("both workers took a share of the orders\n")
	} else {
		q.printf("only one worker took orders\n")
	}
	return nil
}

// deleteQueue deletes the example's streams; the consumer group goes with
// its stream.
func deleteQueue(client *redis.Client, topic string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = client.Del(ctx, topic, topic+":dead").Err()
}

// workers is a pool of two consumers in one group, as two servers would be.
type workers struct {
	routers []*message.Router
	subs    []*redisbus.StreamsSubscriber

	mu        sync.Mutex
	out       io.Writer
	finished  int
	processed []processed
	changed   chan struct{}

	stopWatching context.CancelFunc
	watching     chan struct{} // closed when watchDeadLetters returned
}

type processed struct {
	order  Order
	worker string
}

func startWorkers(ctx context.Context, client *redis.Client, topic string, out io.Writer) (*workers, error) {
	watchCtx, stopWatching := context.WithCancel(ctx)
	w := &workers{out: out, changed: make(chan struct{}, 1), stopWatching: stopWatching, watching: make(chan struct{})}
	// Orders dead-lettered count as finished too.
	go w.watchDeadLetters(watchCtx, client, topic)
	for _, name := range workerNames {
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client:          client,
			ConsumerGroup:   group,
			Consumer:        name,
			MaxDeliveries:   maxDeliveries,
			NackResendDelay: 50 * time.Millisecond, // then 100ms, 200ms...
		}, nil)
		if err != nil {
			w.close()
			return nil, err
		}
		w.subs = append(w.subs, sub)
		router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, nil)
		if err != nil {
			w.close()
			return nil, err
		}
		w.routers = append(w.routers, router)
		router.AddConsumerHandler("process-orders", topic, sub, func(msg *message.Message) error {
			return w.process(name, msg)
		})
		// Run fails when a subscription does (Redis unreachable, refused):
		// wait for that too, not only for Running, which then never comes.
		runErr := make(chan error, 1)
		go func() { runErr <- router.Run(context.WithoutCancel(ctx)) }()
		select {
		case <-router.Running():
		case err := <-runErr:
			w.close()
			return nil, fmt.Errorf("%s cannot start: %w", name, err)
		case <-ctx.Done():
			w.close()
			return nil, ctx.Err()
		}
	}
	return w, nil
}

// process handles one order. An error makes the Router Nack the message:
// redisbus delivers it again after a backoff, and dead-letters it after
// MaxDeliveries.
func (w *workers) process(worker string, msg *message.Message) error {
	var order Order
	if err := json.Unmarshal(msg.Payload, &order); err != nil {
		return err
	}
	if order.Amount <= 0 {
		attempt := msg.Metadata.Get(redisbus.MetadataDeliveryCount)
		w.printf("order %d failed (attempt %s of %d): amount must be positive\n", order.ID, attempt, maxDeliveries)
		return errors.New("amount must be positive")
	}
	time.Sleep(50 * time.Millisecond) // charging a card takes a while
	w.mu.Lock()
	w.processed = append(w.processed, processed{order: order, worker: worker})
	w.mu.Unlock()
	w.finish()
	return nil
}

// processedOrders returns the processed orders by ID.
func (w *workers) processedOrders() []processed {
	w.mu.Lock()
	defer w.mu.Unlock()
	sorted := slices.Clone(w.processed)
	slices.SortStableFunc(sorted, func(a, b processed) int { return a.order.ID - b.order.ID })
	return sorted
}

func (w *workers) everyWorkerTookSome() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, name := range workerNames {
		if !slices.ContainsFunc(w.processed, func(p processed) bool { return p.worker == name }) {
			return false
		}
	}
	return true
}

func (w *workers) watchDeadLetters(ctx context.Context, client *redis.Client, topic string) {
	defer close(w.watching)
	last := "0"
	for ctx.Err() == nil {
		streams, err := client.XRead(ctx, &redis.XReadArgs{Streams: []string{topic + ":dead", last}, Block: 100 * time.Millisecond}).Result()
		if err != nil {
			continue
		}
		for _, entry := range streams[0].Messages {
			last = entry.ID
			w.finish()
		}
	}
}

func (w *workers) finish() {
	w.mu.Lock()
	w.finished++
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *workers) waitFor(ctx context.Context, n int) error {
	for {
		w.mu.Lock()
		finished := w.finished
		w.mu.Unlock()
		if finished >= n {
			return nil
		}
		select {
		case <-w.changed:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d orders finished: %w", finished, n, ctx.Err())
		}
	}
}

func (w *workers) printf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.out, format, args...)
}

func (w *workers) close() {
	w.stopWatching()
	<-w.watching
	for _, r := range w.routers {
		_ = r.Close()
	}
	for _, s := range w.subs {
		_ = s.Close()
	}
}
