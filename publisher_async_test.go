package redisbus_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
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

func TestAsyncPublishDeliversAndFlushWaitsForRedis(t *testing.T) {
	client := pubsubtest.NewClient(t)
	counter := &pipelineCounter{command: "publish"}
	client.AddHook(counter)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: client, Async: true})
	sub := newSubscriber(t, redisbus.SubscriberConfig{InboxSize: 10_000}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	const goroutines, each = 32, 100
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				// A request-scoped context that ends as soon as Publish
				// returns must not stop the message.
				ctx, cancel := context.WithCancel(context.Background())
				msg := message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprintf("%d-%d", g, i)))
				msg.SetContext(ctx)
				assert.NoError(t, pub.Publish(topic, msg))
				cancel()
			}
		})
	}
	wg.Wait()
	require.NoError(t, pub.Flush(t.Context()))
	assert.Equal(t, int64(goroutines*each), counter.commands.Load(), "Flush returned before Redis had every message")

	assert.Len(t, receive(t, ch, goroutines*each), goroutines*each)
	assert.Zero(t, pub.Stats().AsyncFailed)
}

func TestAsyncCloseSendsWhatIsQueued(t *testing.T) {
	client := pubsubtest.NewClient(t)
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Async: true}, nil)
	require.NoError(t, err)
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	payloads := make([]string, 500)
	for i := range payloads {
		payloads[i] = fmt.Sprint(i)
		publish(t, pub, topic, payloads[i])
	}
	require.NoError(t, pub.Close())
	require.NoError(t, pub.Close(), "Close is idempotent")

	assert.Equal(t, payloads, receive(t, ch, len(payloads)), "one publisher goroutine: order kept")
	err = pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil))
	assert.ErrorIs(t, err, redisbus.ErrPublisherClosed)
}

func TestAsyncPublishReportsWhatDidNotReachRedis(t *testing.T) {
	// A port where nothing listens: every round trip fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = client.Close() })

	var reported atomic.Int64
	logger := pubsubtest.NewRecordingLogger()
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{
		Client: client, Async: true,
		OnAsyncError: func(topic string, messages int, err error) {
			assert.Equal(t, "unreachable", topic)
			assert.Error(t, err)
			reported.Add(int64(messages))
		},
	}, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	for range 20 {
		require.NoError(t, pub.Publish("unreachable", message.NewMessage(watermill.NewUUID(), []byte("x"))),
			"an async Publish does not wait for Redis")
	}
	require.NoError(t, pub.Flush(t.Context()))
	assert.Equal(t, uint64(20), pub.Stats().AsyncFailed)
	assert.Equal(t, int64(20), reported.Load())
	assert.NotEmpty(t, logger.Find(watermill.ErrorLogLevel, "Async publish failed"))
}

// silentClient returns a client of a server that accepts connections and
// reads what it is sent but never answers: every round trip waits for
// ReadTimeout.
func silentClient(t *testing.T) *redis.Client {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns sync.WaitGroup
	conns.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				_, _ = io.Copy(io.Discard, conn)
				_ = conn.Close()
			})
		}
	})
	client := redis.NewClient(&redis.Options{Addr: l.Addr().String(), MaxRetries: -1, ReadTimeout: 300 * time.Millisecond})
	t.Cleanup(func() {
		_ = client.Close()
		_ = l.Close()
		conns.Wait()
	})
	return client
}

func TestAsyncCloseGivesUpOnARedisThatDoesNotAnswer(t *testing.T) {
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{
		Client: silentClient(t), Async: true, AsyncCloseTimeout: 100 * time.Millisecond,
	}, nil)
	require.NoError(t, err)
	for range 10 {
		require.NoError(t, pub.Publish("silent", message.NewMessage(watermill.NewUUID(), []byte("x"))))
	}
	err = pub.Close()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "gave up on 10 queued messages")
	// They were sent: their failure is known when the client's read
	// timeout ends the round trip.
	require.Eventually(t, func() bool { return pub.Stats().AsyncFailed == 10 }, waitTimeout, 10*time.Millisecond)
}

func TestAsyncPublishWaitsForRoomWhenTheQueueIsFull(t *testing.T) {
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{
		Client: silentClient(t), Async: true, AsyncQueueSize: 1, AsyncCloseTimeout: time.Millisecond,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	// The calls the flushers took and the one the queue holds are accepted
	// at once; then there is no room until Redis answers.
	var full error
	for i := 0; i < 10 && full == nil; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
		msg.SetContext(ctx)
		full = pub.Publish("silent", msg)
		cancel()
	}
	require.Error(t, full, "a full queue must hold publishers back")
	assert.ErrorIs(t, full, context.DeadlineExceeded)
	assert.Contains(t, full.Error(), "queue full")
}

func TestPublisherAsyncConfigErrorsNameTheField(t *testing.T) {
	client := pubsubtest.NewClient(t)
	for field, config := range map[string]redisbus.PublisherConfig{
		"PublisherConfig.AsyncQueueSize":    {Client: client, Async: true, AsyncQueueSize: -1},
		"PublisherConfig.AsyncCloseTimeout": {Client: client, Async: true, AsyncCloseTimeout: -time.Second},
	} {
		_, err := redisbus.NewPublisher(config, nil)
		var configErr *redisbus.ConfigError
		require.ErrorAs(t, err, &configErr)
		assert.Equal(t, field, configErr.Field)
	}
}
