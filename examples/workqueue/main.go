// Command workqueue processes orders on Redis Streams: orders
// are published reliably, two workers in one consumer group share them (each
// takes an order only when it is about to start it), a failing order is
// retried with backoff and, after MaxDeliveries attempts, moved to the
// dead-letter stream orders:dead.
//
//	go run ./examples/workqueue                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/workqueue
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
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

func main() {
	if err := run(context.Background(), os.Stdout, os.Getenv("REDIS_URL"), "orders"); err != nil {
		fmt.Fprintln(os.Stderr, "workqueue:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, redisURL, topic string) error {
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
	for _, order := range orders {
		payload, _ := json.Marshal(order)
		// Stored once PublishIDs returns; it returns the entry ID.
		ids, err := publisher.PublishIDs(ctx, topic, message.NewMessage(watermill.NewUUID(), payload))
		if err != nil {
			return err
		}
		q.printf("published order %d as entry %s\n", order.ID, ids[0])
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
	for _, worker := range workerNames {
		q.printf("%s processed %d orders\n", worker, q.processedBy(worker))
	}
	return nil
}

var workerNames = []string{"worker-1", "worker-2"}

// workers is a pool of two consumers in one group, as two servers would be.
type workers struct {
	routers []*message.Router
	subs    []*redisbus.StreamsSubscriber

	mu        sync.Mutex
	out       io.Writer
	finished  int
	processed map[string]int
	changed   chan struct{}
}

func startWorkers(ctx context.Context, client *redis.Client, topic string, out io.Writer) (*workers, error) {
	w := &workers{out: out, processed: map[string]int{}, changed: make(chan struct{}, 1)}
	for _, name := range workerNames {
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client:          client,
			ConsumerGroup:   "order-processors",
			Consumer:        name,
			MaxDeliveries:   3,
			NackResendDelay: 50 * time.Millisecond, // then 100ms, 200ms...
		}, nil)
		if err != nil {
			return nil, err
		}
		w.subs = append(w.subs, sub)
		router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, nil)
		if err != nil {
			return nil, err
		}
		w.routers = append(w.routers, router)
		router.AddConsumerHandler("process-orders", topic, sub, func(msg *message.Message) error {
			return w.process(name, msg)
		})
		go func() { _ = router.Run(context.WithoutCancel(ctx)) }()
		<-router.Running()
	}
	// Orders dead-lettered count as finished too.
	go w.watchDeadLetters(ctx, client, topic)
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
	attempt := msg.Metadata.Get(redisbus.MetadataDeliveryCount)
	if order.Amount <= 0 {
		w.printf("%s: order %d failed (attempt %s): amount must be positive\n", worker, order.ID, attempt)
		return errors.New("invalid amount")
	}
	time.Sleep(50 * time.Millisecond) // charging a card takes a while
	w.printf("%s: order %d processed: charged %.2f\n", worker, order.ID, order.Amount)
	w.mu.Lock()
	w.processed[worker]++
	w.mu.Unlock()
	w.finish()
	return nil
}

func (w *workers) processedBy(worker string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.processed[worker]
}

func (w *workers) watchDeadLetters(ctx context.Context, client *redis.Client, topic string) {
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
	for _, r := range w.routers {
		_ = r.Close()
	}
	for _, s := range w.subs {
		_ = s.Close()
	}
}
