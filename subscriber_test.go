package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestEverySubscriberReceivesEveryMessage(t *testing.T) {
	// The cache-invalidation case: each node has its own Subscriber and its
	// own client, and every node must see every invalidation.
	pub := newPublisher(t, redisbus.PublisherConfig{})
	topic := pubsubtest.Topic(t)
	const nodes, messages = 3, 200

	var chans []<-chan *message.Message
	for range nodes {
		sub := newSubscriber(t, redisbus.SubscriberConfig{Client: pubsubtest.NewClient(t)}, nil)
		ch, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		chans = append(chans, ch)
	}

	var want []string
	for i := range messages {
		want = append(want, strconv.Itoa(i))
	}
	publish(t, pub, topic, want...)

	for i, ch := range chans {
		assert.Equal(t, want, receive(t, ch, messages), "node %d", i)
	}
}

func TestForeignPayloadsAreDeliveredRaw(t *testing.T) {
	// Producers that are not Watermill, like the PHP Store::publish, send
	// bare strings.
	client := pubsubtest.NewClient(t)
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	foreign := []string{
		"hi from anywhere",
		"",
		`{"order_id":42}`,
		"\xC1RB\x01\x00\x00", // starts like an envelope but is cut short
		"\xff\x00binary\x00",
	}
	for _, p := range foreign {
		require.NoError(t, client.Publish(t.Context(), topic, p).Err())
	}

	seen := map[string]bool{}
	for _, want := range foreign {
		msg := next(t, ch)
		assert.Equal(t, want, string(msg.Payload))
		assert.NotEmpty(t, msg.UUID)
		assert.False(t, seen[msg.UUID], "UUIDs must be fresh")
		seen[msg.UUID] = true
		msg.Ack()
	}
	assert.Zero(t, sub.Stats().DecodeErrors)
}

// failingMarshaler refuses every payload.
type failingMarshaler struct{ redisbus.EnvelopeMarshaler }

func (failingMarshaler) Unmarshal(string, []byte) (*message.Message, error) {
	return nil, errors.New("refused")
}

func TestUndecodablePayloadIsDeliveredNotDropped(t *testing.T) {
	pub := newPublisher(t, redisbus.PublisherConfig{})
	logger := pubsubtest.NewRecordingLogger()
	sub := newSubscriber(t, redisbus.SubscriberConfig{Marshaler: failingMarshaler{}}, logger)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	sent := publish(t, pub, topic, "one", "two")
	for _, s := range sent {
		msg := next(t, ch)
		wire, err := redisbus.EnvelopeMarshaler{}.Marshal(topic, s)
		require.NoError(t, err)
		assert.Equal(t, wire, []byte(msg.Payload), "the undecoded bytes are the payload")
		assert.Equal(t, "refused", msg.Metadata.Get(redisbus.MetadataDecodeError))
		msg.Ack()
	}
	assert.Equal(t, uint64(2), sub.Stats().DecodeErrors)
	assert.Len(t, logger.Find(watermill.ErrorLogLevel, "Cannot decode"), 2)
}

func TestSubscribeCallsShareOneRedisSubscription(t *testing.T) {
	client := pubsubtest.NewClient(t)
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topics := []string{pubsubtest.Topic(t), pubsubtest.Topic(t)}
	for _, topic := range topics {
		for range 3 {
			_, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)
		}
	}
	counts, err := client.PubSubNumSub(t.Context(), topics...).Result()
	require.NoError(t, err)
	for _, topic := range topics {
		assert.Equal(t, int64(1), counts[topic], topic)
	}
}

func TestSubscribeReturnsOnlyOnceRedisConfirmed(t *testing.T) {
	for _, sharded := range []bool{false, true} {
		t.Run(fmt.Sprint("sharded=", sharded), func(t *testing.T) {
			pub := newPublisher(t, redisbus.PublisherConfig{Sharded: sharded})
			for range 20 {
				sub := newSubscriber(t, redisbus.SubscriberConfig{Sharded: sharded}, nil)
				topic := pubsubtest.Topic(t)
				_, err := sub.Subscribe(t.Context(), topic)
				require.NoError(t, err)
				n, err := pub.PublishCount(t.Context(), topic, message.NewMessage(watermill.NewUUID(), nil))
				require.NoError(t, err)
				require.Equal(t, int64(1), n, "a message published right after Subscribe must reach it")
			}
		})
	}
}

func TestMessagesWaitInTheInboxForTheFirstSubscribe(t *testing.T) {
	pub := newPublisher(t, redisbus.PublisherConfig{})
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topic := pubsubtest.Topic(t)
	require.NoError(t, sub.SubscribeInitialize(topic))

	publish(t, pub, topic, "1", "2", "3")
	flush(t, sub)
	assert.Equal(t, 3, sub.Stats().Buffered)

	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	assert.Equal(t, []string{"1", "2", "3"}, receive(t, ch, 3))
}

func TestNackRedeliversAfterTheDelayAndKeepsOrder(t *testing.T) {
	const delay = 150 * time.Millisecond
	pub := newPublisher(t, redisbus.PublisherConfig{})
	sub := newSubscriber(t, redisbus.SubscriberConfig{NackResendDelay: delay}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "first", "second")

	first := next(t, ch)
	require.Equal(t, "first", string(first.Payload))
	nackedAt := time.Now()
	first.Nack()

	again := next(t, ch)
	assert.GreaterOrEqual(t, time.Since(nackedAt), delay, "redelivered before NackResendDelay")
	assert.Equal(t, "first", string(again.Payload), "a nacked message is redelivered before the next one")
	assert.Equal(t, first.UUID, again.UUID)
	again.Ack()
	assert.Equal(t, []string{"second"}, receive(t, ch, 1))
	assert.Equal(t, uint64(1), sub.Stats().Nacked)
}

func TestUnackedMessageGoesToTheNextSubscribe(t *testing.T) {
	pub := newPublisher(t, redisbus.PublisherConfig{})
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topic := pubsubtest.Topic(t)

	ctx, cancel := context.WithCancel(t.Context())
	first, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	publish(t, pub, topic, "a", "b")
	held := next(t, first) // delivered, never acked
	require.Equal(t, "a", string(held.Payload))
	cancel()
	for range first {
		t.Fatal("no message may arrive after the subscription's context is done")
	}
	<-held.Context().Done()

	second, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, receive(t, second, 2))
}

func TestInboxOverflowPolicy(t *testing.T) {
	const size, sent = 10, 25
	for _, tc := range []struct {
		policy redisbus.OverflowPolicy
		first  int // the first message kept
	}{
		{redisbus.DropOldest, sent - size},
		{redisbus.DropNewest, 0},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			pub := newPublisher(t, redisbus.PublisherConfig{})
			logger := pubsubtest.NewRecordingLogger()
			sub := newSubscriber(t, redisbus.SubscriberConfig{InboxSize: size, InboxOverflow: tc.policy}, logger)
			topic := pubsubtest.Topic(t)
			require.NoError(t, sub.SubscribeInitialize(topic))

			var payloads []string
			for i := range sent {
				payloads = append(payloads, strconv.Itoa(i))
			}
			publish(t, pub, topic, payloads...)
			flush(t, sub)

			stats := sub.Stats()
			assert.Equal(t, uint64(sent-size), stats.Dropped)
			assert.Equal(t, size, stats.Buffered)
			assert.NotEmpty(t, logger.Find(watermill.ErrorLogLevel, "Inbox full"))

			ch, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)
			assert.Equal(t, payloads[tc.first:tc.first+size], receive(t, ch, size))
		})
	}
}

func TestRedisRestartIsRecoveredAndTheGapReported(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	pub := newPublisher(t, redisbus.PublisherConfig{Client: server.Client(t)})
	logger := pubsubtest.NewRecordingLogger()
	windows := make(chan redisbus.LossWindow, 1)
	sub := newSubscriber(t, redisbus.SubscriberConfig{
		Client:      server.Client(t),
		OnReconnect: func(w redisbus.LossWindow) { windows <- w },
	}, logger)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	publish(t, pub, topic, "before")
	assert.Equal(t, []string{"before"}, receive(t, ch, 1))

	killedAt := time.Now()
	server.Restart(t)

	var window redisbus.LossWindow
	select {
	case window = <-windows:
	case <-time.After(waitTimeout):
		t.Fatal("the subscription did not come back after the restart")
	}
	assert.Equal(t, []string{topic}, window.Topics)
	assert.False(t, window.From.After(killedAt), "the window must start no later than the crash")
	assert.True(t, window.To.After(killedAt))
	assert.Error(t, window.Err)
	assert.Equal(t, uint64(1), sub.Stats().Reconnects)
	assert.Equal(t, window, sub.Stats().LastLoss)
	assert.NotEmpty(t, logger.Find(watermill.ErrorLogLevel, "connection lost"))
	assert.NotEmpty(t, logger.Find(watermill.InfoLogLevel, "connection restored"))

	// The same channel keeps working; nothing stale is left in it.
	publish(t, pub, topic, "after")
	assert.Equal(t, []string{"after"}, receive(t, ch, 1))
}

func TestSilentlyDeadConnectionIsReplaced(t *testing.T) {
	// A proxy that can stop forwarding on its open connections, as a dead
	// load balancer or a network partition does: no error, just silence.
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	subClient := pubsubtest.ClientFor(t, proxy.Addr())
	windows := make(chan redisbus.LossWindow, 1)
	sub := newSubscriber(t, redisbus.SubscriberConfig{
		Client:              subClient,
		HealthCheckInterval: 100 * time.Millisecond,
		OnReconnect:         func(w redisbus.LossWindow) { windows <- w },
	}, nil)
	pub := newPublisher(t, redisbus.PublisherConfig{})
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	proxy.FreezeOpenConnections()
	select {
	case w := <-windows:
		assert.ErrorContains(t, w.Err, "health-check")
	case <-time.After(waitTimeout):
		t.Fatal("the silent connection was not replaced")
	}
	publish(t, pub, topic, "after")
	assert.Equal(t, []string{"after"}, receive(t, ch, 1))
}

// OnDisconnect reports a lost connection when it is found lost, while it
// stays down, so that state kept from the messages can stop being trusted
// before OnReconnect, which comes only once Redis is reachable again.
func TestOnDisconnectReportsTheLossWhileTheConnectionIsDown(t *testing.T) {
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	subClient := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = subClient.Close() })
	var order []string
	var mu sync.Mutex
	disconnects := make(chan redisbus.LossWindow, 1)
	reconnects := make(chan redisbus.LossWindow, 1)
	sub := newSubscriber(t, redisbus.SubscriberConfig{
		Client:              subClient,
		HealthCheckInterval: 100 * time.Millisecond,
		OnDisconnect: func(w redisbus.LossWindow) {
			mu.Lock()
			order = append(order, "disconnect")
			mu.Unlock()
			disconnects <- w
		},
		OnReconnect: func(w redisbus.LossWindow) {
			mu.Lock()
			order = append(order, "reconnect")
			mu.Unlock()
			reconnects <- w
		},
	}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	partitioned := time.Now()
	proxy.Blackhole() // no connection gets through until Heal
	var down redisbus.LossWindow
	select {
	case down = <-disconnects:
	case <-time.After(waitTimeout):
		t.Fatal("the lost connection was not reported")
	}
	assert.Equal(t, []string{topic}, down.Topics)
	assert.False(t, down.From.After(partitioned), "the window starts no later than the partition")
	assert.True(t, down.To.IsZero(), "the window is still open")
	assert.ErrorContains(t, down.Err, "health-check")

	proxy.Heal()
	var back redisbus.LossWindow
	select {
	case back = <-reconnects:
	case <-time.After(waitTimeout):
		t.Fatal("the subscription did not come back")
	}
	assert.Equal(t, down.From, back.From)
	assert.True(t, back.To.After(down.From))
	mu.Lock()
	assert.Equal(t, []string{"disconnect", "reconnect"}, order)
	mu.Unlock()
	pub := newPublisher(t, redisbus.PublisherConfig{})
	publish(t, pub, topic, "after")
	assert.Equal(t, []string{"after"}, receive(t, ch, 1))
}

func TestSubscribeTimesOutWhileRedisIsDownAndRecoversLater(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	sub := newSubscriber(t, redisbus.SubscriberConfig{Client: client, SubscribeTimeout: 300 * time.Millisecond}, nil)
	topic := pubsubtest.Topic(t)

	server.Kill(t)
	_, err := sub.Subscribe(t.Context(), topic)
	require.ErrorContains(t, err, "SubscribeTimeout")

	server.Start(t)
	// The topic stayed registered: once Redis is back, the read loop
	// resubscribes it (after its reconnect backoff) and Subscribe succeeds.
	var ch <-chan *message.Message
	deadline := time.Now().Add(waitTimeout)
	for ch == nil {
		ch, err = sub.Subscribe(t.Context(), topic)
		if err != nil {
			require.ErrorContains(t, err, "SubscribeTimeout")
			require.True(t, time.Now().Before(deadline), "Subscribe never succeeded after Redis came back")
		}
	}
	pub := newPublisher(t, redisbus.PublisherConfig{Client: client})
	publish(t, pub, topic, "back")
	assert.Equal(t, []string{"back"}, receive(t, ch, 1))
}

func TestCloseDuringPublishAndSubscribe(t *testing.T) {
	client := pubsubtest.NewClient(t)
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	first, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for range 4 {
		wg.Go(func() {
			started <- struct{}{}
			for {
				err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
				if err != nil {
					assert.ErrorIs(t, err, redisbus.ErrPublisherClosed)
					return
				}
			}
		})
		wg.Go(func() {
			started <- struct{}{}
			for {
				ch, err := sub.Subscribe(t.Context(), topic)
				if err != nil {
					assert.ErrorIs(t, err, redisbus.ErrSubscriberClosed)
					return
				}
				for msg := range ch {
					msg.Ack()
				}
			}
		})
	}
	for range 8 {
		<-started
	}
	// Consume a little so that messages are in flight when Close comes.
	for range 10 {
		next(t, first).Ack()
	}

	var closers sync.WaitGroup
	for range 3 {
		closers.Go(func() { assert.NoError(t, sub.Close()) })
		closers.Go(func() { assert.NoError(t, pub.Close()) })
	}
	closers.Wait()
	wg.Wait()
	for range first {
	}
	assert.NoError(t, client.Ping(t.Context()).Err(), "the caller's client must stay open")
}

func TestCloseLeaksNoGoroutine(t *testing.T) {
	client := pubsubtest.NewClient(t)
	require.NoError(t, client.Ping(t.Context()).Err())
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	for _, sharded := range []bool{false, true} {
		pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Sharded: sharded}, nil)
		require.NoError(t, err)
		sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, Sharded: sharded}, nil)
		require.NoError(t, err)
		var chans []<-chan *message.Message
		for range 3 {
			topic := pubsubtest.Topic(t)
			for range 2 {
				ch, err := sub.Subscribe(context.Background(), topic)
				require.NoError(t, err)
				chans = append(chans, ch)
			}
			publish(t, pub, topic, "held", "waiting")
		}
		held := next(t, chans[0]) // one message in flight at Close
		require.NoError(t, sub.Close())
		require.NoError(t, pub.Close())
		<-held.Context().Done()
		for _, ch := range chans {
			for range ch {
			}
		}
	}
}

func TestSubscribeAfterCloseFails(t *testing.T) {
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	require.NoError(t, sub.Close())
	_, err := sub.Subscribe(t.Context(), pubsubtest.Topic(t))
	assert.ErrorIs(t, err, redisbus.ErrSubscriberClosed)
	assert.ErrorIs(t, sub.SubscribeInitialize(pubsubtest.Topic(t)), redisbus.ErrSubscriberClosed)
}

func TestSubscriberConfigErrorsNameTheField(t *testing.T) {
	client := pubsubtest.NewClient(t)
	for _, c := range []struct {
		field  string
		config redisbus.SubscriberConfig
	}{
		{"SubscriberConfig.Client", redisbus.SubscriberConfig{}},
		{"SubscriberConfig.InboxSize", redisbus.SubscriberConfig{Client: client, InboxSize: -1}},
		{"SubscriberConfig.InboxOverflow", redisbus.SubscriberConfig{Client: client, InboxOverflow: 7}},
		{"SubscriberConfig.SubscribeTimeout", redisbus.SubscriberConfig{Client: client, SubscribeTimeout: -time.Second}},
		{"SubscriberConfig.HealthCheckInterval", redisbus.SubscriberConfig{Client: client, HealthCheckInterval: -time.Second}},
		{"SubscriberConfig.HealthCheckInterval", redisbus.SubscriberConfig{Client: client, HealthCheckInterval: time.Microsecond}},
	} {
		field, config := c.field, c.config
		_, err := redisbus.NewSubscriber(config, nil)
		var configErr *redisbus.ConfigError
		require.True(t, errors.As(err, &configErr), "%s: got %v", field, err)
		assert.Equal(t, field, configErr.Field)
		assert.Contains(t, err.Error(), field)
	}
}
