// Command dedup charges orders from a Redis Stream once each, however often
// they are published or delivered. The shop publishes five orders through
// dedup.Publisher and retries one Publish, as after a timeout: the stream
// stores it once. A producer without the guard (a PHP service, say) sends
// one order again. Two workers in one consumer group charge the orders
// behind dedup.Middleware, each charge added to the day's revenue in the
// same transaction as the mark that the order was handled (Commit), so
// that a worker killed at any point cannot charge an order twice.
//
//	go run ./examples/dedup                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/dedup
//
// It prints the same lines on every run:
//
//	publishing 5 orders; the publish of order 3 is retried, as after a timeout
//	the stream holds 5 orders
//	a producer without the guard sends order 4 again
//	charged order 1: 19.99
//	charged order 2: 20.00
//	charged order 3: 30.00
//	charged order 4: 40.00
//	charged order 5: 50.00
//	copies dropped: 1
//	revenue 159.99: each order charged once
package main

import (
	"context"
	"encoding/json"
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

	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/internal/redisurl"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Order is what the shop publishes.
type Order struct {
	ID     int     `json:"id"`
	Amount float64 `json:"amount"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Getenv("REDIS_URL")); err != nil {
		fmt.Fprintln(os.Stderr, "dedup:", err)
		os.Exit(1)
	}
}

// run publishes the orders, has two workers charge them, prints the outcome
// and deletes what it created in Redis.
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

	// A real service keeps its names for good: the stream, the group, and
	// the marks must outlive every process. This program shows one batch
	// and exits, so each run has names of its own and deletes them at the
	// end. On Redis Cluster, give the marks' Prefix and the revenue one
	// hash tag ({shop}:dedup:, {shop}:revenue): Commit's transaction
	// writes both.
	run := "dedup-example:" + watermill.NewShortUUID()
	topic, revenue := run+":orders", run+":revenue"
	config := dedup.Config{Client: client, Prefix: run + ":dedup:"}
	defer deleteKeys(client, run)

	w, err := startWorkers(ctx, client, config, topic, revenue, out)
	if err != nil {
		return err
	}
	defer w.close()

	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		return err
	}
	defer streams.Close()
	// Over a StreamsPublisher, the check and the XADD are one script: a
	// retried Publish stores nothing, even when the first one's reply was
	// lost.
	publisher, err := dedup.NewPublisher(streams, config, nil)
	if err != nil {
		return err
	}
	orders := []Order{{1, 19.99}, {2, 20}, {3, 30}, {4, 40}, {5, 50}}
	w.printf("publishing %d orders; the publish of order 3 is retried, as after a timeout\n", len(orders))
	var order4 *message.Message
	for _, order := range orders {
		payload, _ := json.Marshal(order)
		msg := message.NewMessageWithContext(ctx, watermill.NewUUID(), payload)
		attempts := 1
		if order.ID == 3 {
			attempts = 2
		}
		for range attempts {
			if err := publisher.Publish(topic, msg); err != nil {
				return err
			}
		}
		if order.ID == 4 {
			order4 = msg
		}
	}
	w.printf("the stream holds %d orders\n", client.XLen(ctx, topic).Val())

	w.printf("a producer without the guard sends order 4 again\n")
	if err := streams.Publish(topic, order4); err != nil {
		return err
	}

	if err := w.waitFor(ctx, len(orders), 1); err != nil {
		return err
	}
	for _, order := range w.chargedOrders() {
		w.printf("charged order %d: %.2f\n", order.ID, order.Amount)
	}
	w.printf("copies dropped: %d\n", w.dropped())
	total, err := client.Get(ctx, revenue).Float64()
	if err != nil {
		return err
	}
	w.printf("revenue %.2f: each order charged once\n", total)
	return nil
}

// deleteKeys deletes the run's keys: the stream (its group goes with it),
// the marks of the workers and of the publisher, and the revenue.
func deleteKeys(client *redis.Client, run string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, pattern := range []string{run + ":*", "{" + run + ":*"} {
		keys, _ := client.Keys(ctx, pattern).Result()
		if len(keys) > 0 {
			_ = client.Del(ctx, keys...).Err()
		}
	}
}

// workers is a pool of two consumers in one group, as two servers would
// be, each with a Middleware of its own.
type workers struct {
	routers     []*message.Router
	subs        []*redisbus.StreamsSubscriber
	middlewares []*dedup.Middleware

	mu      sync.Mutex
	out     io.Writer
	charged []Order
	changed chan struct{}
}

func startWorkers(ctx context.Context, client *redis.Client, config dedup.Config, topic, revenue string, out io.Writer) (*workers, error) {
	w := &workers{out: out, changed: make(chan struct{}, 1)}
	for _, name := range []string{"worker-1", "worker-2"} {
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client: client, ConsumerGroup: "payments", Consumer: name,
		}, nil)
		if err != nil {
			w.close()
			return nil, err
		}
		w.subs = append(w.subs, sub)
		m, err := dedup.NewMiddleware(config, nil)
		if err != nil {
			w.close()
			return nil, err
		}
		w.middlewares = append(w.middlewares, m)
		router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, nil)
		if err != nil {
			w.close()
			return nil, err
		}
		w.routers = append(w.routers, router)
		router.AddConsumerHandler("charge", topic, sub, func(msg *message.Message) error {
			var order Order
			if err := json.Unmarshal(msg.Payload, &order); err != nil {
				return err
			}
			// The charge and the mark that the order was handled, in one
			// transaction: a copy of the order, now or after a crash, is
			// dropped by the Middleware.
			if err := m.Commit(msg.Context(), msg, func(pipe redis.Pipeliner) error {
				pipe.IncrByFloat(msg.Context(), revenue, order.Amount)
				return nil
			}); err != nil {
				return err
			}
			w.charge(order)
			return nil
		}).AddMiddleware(m.Middleware)
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

func (w *workers) charge(order Order) {
	w.mu.Lock()
	w.charged = append(w.charged, order)
	w.mu.Unlock()
	w.notify()
}

func (w *workers) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// dropped counts the copies the workers' Middlewares dropped.
func (w *workers) dropped() uint64 {
	n := uint64(0)
	for _, m := range w.middlewares {
		n += m.Stats().Duplicates
	}
	return n
}

// waitFor waits until n orders were charged and copies dropped. A copy
// that arrives while its order is being charged is nacked and comes back
// after a backoff: look again now and then.
func (w *workers) waitFor(ctx context.Context, n int, copies uint64) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		w.mu.Lock()
		charged := len(w.charged)
		w.mu.Unlock()
		if charged >= n && w.dropped() >= copies {
			return nil
		}
		select {
		case <-w.changed:
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d orders charged, %d copies dropped: %w", charged, n, w.dropped(), ctx.Err())
		}
	}
}

// chargedOrders returns the charged orders by ID: the workers run
// concurrently, and every run prints the same lines.
func (w *workers) chargedOrders() []Order {
	w.mu.Lock()
	defer w.mu.Unlock()
	sorted := slices.Clone(w.charged)
	slices.SortFunc(sorted, func(a, b Order) int { return a.ID - b.ID })
	return sorted
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
