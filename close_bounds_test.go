package redisbus_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// closeBound is the CloseTimeout these tests set; closeSlack is what Close
// may take beyond it (scheduling, a loaded machine), far below the client
// timeouts (3 s reads, 5 s dials, 3 retries) a Close bounded by go-redis
// would take.
const (
	closeBound = 300 * time.Millisecond
	closeSlack = 1500 * time.Millisecond
)

// unansweringClient is a client, with go-redis' default timeouts, whose
// Redis stops answering when blackhole is called: connections open and
// new ones are accepted, and nothing comes back, as behind a partition.
// sent receives a signal whenever command has been written to a
// connection: a hook would signal before go-redis has a connection, and a
// Close in between ends the round trip before anything is sent.
func unansweringClient(t *testing.T, command string) (client *redis.Client, blackhole func(), sent <-chan struct{}) {
	t.Helper()
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	signals := make(chan struct{}, 1000)
	// RESP sends a command's name as a bulk string: "$7\r\npublish\r\n".
	name := []byte(fmt.Sprintf("$%d\r\n%s\r\n", len(command), command))
	client = redis.NewClient(&redis.Options{
		Addr: proxy.Addr(),
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &writeSignaller{Conn: conn, pattern: name, signals: signals}, nil
		},
	})
	t.Cleanup(func() { _ = client.Close() })
	return client, proxy.Blackhole, signals
}

// writeSignaller signals after every Write that carries pattern
// (case-insensitively).
type writeSignaller struct {
	net.Conn
	pattern []byte
	signals chan struct{}
}

func (c *writeSignaller) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 && bytes.Contains(bytes.ToLower(b[:n]), c.pattern) {
		select {
		case c.signals <- struct{}{}:
		default:
		}
	}
	return n, err
}

// awaitSent waits for n sends.
func awaitSent(t *testing.T, sent <-chan struct{}, n int) {
	t.Helper()
	for range n {
		select {
		case <-sent:
		case <-time.After(waitTimeout):
			t.Fatal("the command was not sent")
		}
	}
}

// closeWithin calls close and fails unless it returns within bound and
// closeSlack.
func closeWithin(t *testing.T, bound time.Duration, close func() error) error {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(bound + closeSlack):
		t.Fatalf("Close took longer than %s (the bound) + %s; it is still running after %s", bound, closeSlack, time.Since(start))
		return nil
	}
}

// inFlight starts publish in a goroutine and returns its result channel.
func inFlight(publish func() error) <-chan error {
	result := make(chan error, 1)
	go func() { result <- publish() }()
	return result
}

func awaitError(t *testing.T, result <-chan error, what string) {
	t.Helper()
	select {
	case err := <-result:
		assert.Error(t, err, "%s must fail: Redis never confirmed it", what)
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not return after Close", what)
	}
}

func TestPublisherCloseIsBoundedWhenRedisStopsAnswering(t *testing.T) {
	client, blackhole, sent := unansweringClient(t, "publish")
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, CloseTimeout: closeBound}, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	publish(t, pub, topic, "warm-up")
	awaitSent(t, sent, 1)

	blackhole()
	result := inFlight(func() error { return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil)) })
	awaitSent(t, sent, 1)
	assert.ErrorContains(t, closeWithin(t, closeBound, pub.Close), "gave up on 1 publishes")
	awaitError(t, result, "a Publish in flight")
	assert.ErrorIs(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil)), redisbus.ErrPublisherClosed)
	_ = closeWithin(t, closeBound, pub.Close) // idempotent, and as quick
}

// In Async mode the bound is AsyncCloseTimeout, even with publishers
// waiting for room in a full queue (they fail with ErrPublisherClosed).
func TestAsyncPublisherCloseIsBoundedWhenRedisStopsAnswering(t *testing.T) {
	client, blackhole, sent := unansweringClient(t, "publish")
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{
		Client: client, Async: true, AsyncQueueSize: 2, AsyncCloseTimeout: closeBound,
	}, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	publish(t, pub, topic, "warm-up")
	require.NoError(t, pub.Flush(t.Context()))
	awaitSent(t, sent, 1)

	blackhole()
	publish(t, pub, topic, "stuck in flight")
	awaitSent(t, sent, 1)
	publish(t, pub, topic, "queued 1", "queued 2") // the queue is full now
	var waiting []<-chan error
	for range 4 { // these wait for room, with no deadline
		waiting = append(waiting, inFlight(func() error {
			return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil))
		}))
	}
	flushed := inFlight(func() error { return pub.Flush(context.Background()) })
	err = closeWithin(t, closeBound, pub.Close)
	assert.ErrorContains(t, err, "gave up on", "Close counts what it could not confirm")
	for _, result := range waiting {
		select {
		case <-result: // accepted into the queue (counted failed), or refused as closed
		case <-time.After(waitTimeout):
			t.Fatal("a Publish waiting for room did not return after Close")
		}
	}
	awaitError(t, flushed, "a Flush waiting for Redis")
}

func TestStreamsPublisherCloseIsBoundedWhenRedisStopsAnswering(t *testing.T) {
	client, blackhole, sent := unansweringClient(t, "xadd")
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client, CloseTimeout: closeBound}, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	publish(t, pub, topic, "warm-up")
	awaitSent(t, sent, 1)

	blackhole()
	var results []<-chan error
	for range 3 {
		results = append(results, inFlight(func() error {
			return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil))
		}))
	}
	awaitSent(t, sent, 1) // the others wait for a pipeline, or ride in this one
	assert.ErrorContains(t, closeWithin(t, closeBound, pub.Close), "gave up on")
	for _, result := range results {
		awaitError(t, result, "a Publish in flight")
	}
}

// A StreamsSubscriber with a message in a handler's hands closes within
// CloseTimeout + 1 s when Redis stops answering, with an error saying
// what it gave up.
func TestStreamsSubscriberCloseIsBoundedWhenRedisStopsAnswering(t *testing.T) {
	client, blackhole, _ := unansweringClient(t, "xack")
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "g", CloseTimeout: closeBound,
	}, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, newStreamsPublisher(t, redisbus.StreamsPublisherConfig{}), topic, "1", "2", "3")
	next(t, messages).Ack()
	inHand := next(t, messages) // never acked

	blackhole()
	err = closeWithin(t, closeBound+time.Second, sub.Close)
	assert.Error(t, err, "Close says it gave up")
	select {
	case <-inHand.Context().Done():
	default:
		t.Error("the message in a handler's hands was not cancelled")
	}
	_ = closeWithin(t, closeBound+time.Second, sub.Close) // idempotent
}

// The Pub/Sub Subscriber closes at once when Redis stops answering.
func TestSubscriberCloseIsPromptWhenRedisStopsAnswering(t *testing.T) {
	client, blackhole, _ := unansweringClient(t, "subscribe")
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	require.NoError(t, err)
	_, err = sub.Subscribe(t.Context(), pubsubtest.Topic(t))
	require.NoError(t, err)
	blackhole()
	require.NoError(t, closeWithin(t, 0, sub.Close))
}
