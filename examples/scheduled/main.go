// Command scheduled runs jobs later on Redis Streams with Watermill's own
// delay API: a job scheduled a few seconds ahead, and a job whose handler
// fails once and is retried after a delay — without holding a worker or a
// pending entry while it waits.
//
//	go run ./examples/scheduled                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/scheduled
//
// It prints the same lines on every run:
//
//	scheduled "send the welcome email" for 3s from now; "charge the card" for now
//	charge the card: failed (card declined); retrying in 2s
//	1s in, both jobs wait in Redis: 2 scheduled, 0 pending in the group
//	charge the card: done on attempt 2, 2s after the first
//	send the welcome email: done 3s after it was scheduled
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/internal/redisurl"
)

const (
	welcomeDelay = 3 * time.Second
	retryDelay   = 2 * time.Second
	group        = "job-runners"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Getenv("REDIS_URL")); err != nil {
		fmt.Fprintln(os.Stderr, "scheduled:", err)
		os.Exit(1)
	}
}

// run schedules the two jobs, runs them through a Router and prints what
// happened, then deletes what it made in Redis.
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

	// A stream of its own per run, deleted at the end (see
	// examples/workqueue for why a real queue keeps one name for good).
	topic := "scheduled-example:" + watermill.NewShortUUID() + ":jobs"
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = client.Del(ctx, topic, topic+":dead", redisbus.DelayedKey(topic)).Err()
	}()

	publisher, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		return err
	}
	defer publisher.Close()
	subscriber, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
	if err != nil {
		return err
	}
	defer subscriber.Close()

	r := &runner{out: out, failed: make(chan struct{}), done: make(chan struct{})}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, nil)
	if err != nil {
		return err
	}
	// A failing handler's message comes back after the delay this sets:
	// the subscriber stores it as a delayed message and acks the entry.
	router.AddMiddleware((&middleware.DelayOnError{InitialInterval: retryDelay, MaxInterval: time.Minute, Multiplier: 2}).Middleware)
	router.AddConsumerHandler("jobs", topic, subscriber, r.handle)
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	select {
	case <-router.Running():
	case <-ctx.Done():
		return ctx.Err()
	}

	// Watermill's delay API: a publisher that applies the delay in the
	// message's context.
	delayed, err := delay.NewPublisher(publisher, delay.PublisherConfig{AllowNoDelay: true})
	if err != nil {
		return err
	}
	r.scheduled = time.Now()
	welcome := message.NewMessageWithContext(delay.WithContext(ctx, delay.For(welcomeDelay)), watermill.NewUUID(), []byte("send the welcome email"))
	charge := message.NewMessageWithContext(ctx, watermill.NewUUID(), []byte("charge the card"))
	r.printf("scheduled %q for %s from now; %q for now\n", welcome.Payload, welcomeDelay, charge.Payload)
	if err := delayed.Publish(topic, welcome, charge); err != nil {
		return err
	}

	// While both wait (the welcome email, and the card's retry), they are
	// in the topic's delayed set, and nothing is pending in the group: no
	// worker holds them.
	select {
	case <-r.failed:
	case <-ctx.Done():
		return fmt.Errorf("the card was not charged: %w", ctx.Err())
	}
	time.Sleep(time.Until(r.scheduled.Add(time.Second)))
	scheduled, _, err := subscriber.Scheduled(ctx, topic)
	if err != nil {
		return err
	}
	pending, err := client.XPending(ctx, topic, group).Result()
	if err != nil {
		return err
	}
	r.printf("1s in, both jobs wait in Redis: %d scheduled, %d pending in the group\n", scheduled, pending.Count)
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the jobs did not run: %w", ctx.Err())
	}
}

// runner runs the jobs and reports on them.
type runner struct {
	out       io.Writer
	scheduled time.Time
	failed    chan struct{} // closed when the card's first attempt failed
	done      chan struct{} // closed when both jobs are done

	mu       sync.Mutex
	firstTry time.Time
	finished int
}

func (r *runner) handle(msg *message.Message) error {
	job := string(msg.Payload)
	switch {
	case job == "charge the card" && r.firstTry.IsZero():
		r.firstTry = time.Now() // one handler at a time: the Router's subscription is ordered
		r.printf("%s: failed (card declined); retrying in %s\n", job, retryDelay)
		close(r.failed)
		return errors.New("card declined")
	case job == "charge the card":
		r.printf("%s: done on attempt %s, %s after the first\n", job, msg.Metadata.Get(redisbus.MetadataDeliveryCount), time.Since(r.firstTry).Round(time.Second))
	default:
		r.printf("%s: done %s after it was scheduled\n", job, time.Since(r.scheduled).Round(time.Second))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished++; r.finished == 2 {
		close(r.done)
	}
	return nil
}

func (r *runner) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, format, args...)
}
