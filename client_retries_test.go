package redisbus_test

import (
	"context"
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

// lateRepliesClient is a client behind a proxy; slowDown makes the replies
// on its open connections arrive 700 ms late while it gives up on a reply
// after 200 ms: a command runs at once in Redis and then looks lost, and
// go-redis (default MaxRetries, 3) sends it again on a new connection.
func lateRepliesClient(t *testing.T) (client *redis.Client, slowDown func()) {
	t.Helper()
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	client = redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	return client, func() { proxy.DelayOpenConnections(700 * time.Millisecond) }
}

// copiesReceived publishes a marker through a healthy publisher and counts
// the messages with uuid that arrive before it: Redis delivers a channel's
// messages in order, so everything sent before the marker is in by then.
func copiesReceived(t *testing.T, ch <-chan *message.Message, topic, uuid string) int {
	t.Helper()
	marker := publish(t, newPublisher(t, redisbus.PublisherConfig{}), topic, "marker")[0]
	copies := 0
	for {
		msg := next(t, ch)
		msg.Ack()
		switch msg.UUID {
		case uuid:
			copies++
		case marker.UUID:
			return copies
		}
	}
}

// A PUBLISH that Redis ran but answered late is not sent again: the
// subscriber gets the message once, and Publish says it does not know.
func TestPublishWithALateReplyIsNotRepeated(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(map[bool]string{false: "Publish waits", true: "Async"}[async], func(t *testing.T) {
			sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
			topic := pubsubtest.Topic(t)
			ch, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)
			client, slowDown := lateRepliesClient(t)
			pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Async: async}, nil)
			require.NoError(t, err)
			defer pub.Close()
			publish(t, pub, topic+"-warm-up", "opens the connection that turns slow")
			require.NoError(t, pub.Flush(t.Context()))
			slowDown()

			msg := message.NewMessage(watermill.NewUUID(), []byte("once"))
			err = pub.Publish(topic, msg)
			if async {
				require.NoError(t, err)
				require.NoError(t, pub.Flush(t.Context()))
				assert.Equal(t, uint64(1), pub.Stats().AsyncFailed, "a message whose reply was lost counts as failed")
			} else {
				require.Error(t, err, "Publish cannot know whether Redis ran it")
			}
			assert.Equal(t, 1, copiesReceived(t, ch, topic, msg.UUID))
		})
	}
}

// An XADD that Redis ran but answered late is not sent again: the stream
// holds the entry once.
func TestStreamsPublishWithALateReplyIsNotRepeated(t *testing.T) {
	client, slowDown := lateRepliesClient(t)
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()
	topic := pubsubtest.Topic(t)
	publish(t, pub, topic+"-warm-up", "opens the connection that turns slow")
	slowDown()

	require.Error(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("once"))))
	// The late replies are on their way; every XADD ran when it arrived.
	assert.Equal(t, int64(1), pubsubtest.NewClient(t).XLen(t.Context(), topic).Val())
}

// What Redis did not run is still sent again, with the client's retry
// settings: a publish while Redis restarts goes through once it is back.
func TestPublishRetriesWhatRedisDidNotRun(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := redis.NewClient(&redis.Options{Addr: server.Addr, MaxRetries: 50, MaxRetryBackoff: 50 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()
	topic := pubsubtest.Topic(t)
	require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("before"))))

	server.Kill(t)
	published := make(chan error, 1)
	go func() { published <- pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("while down"))) }()
	server.Start(t)
	select {
	case err := <-published:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Publish did not return")
	}
	assert.Equal(t, int64(1), server.Client(t).XLen(t.Context(), topic).Val(), "the entry stored once (Redis restarted empty)")
}

// A client whose password Redis refuses publishes nothing, and says so:
// go-redis leaves a pipeline's commands untouched when the connection
// cannot be set up, and they must not read as published.
func TestPublishWithAWrongPasswordFails(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t) // authenticated before the password is set
	require.NoError(t, admin.Ping(t.Context()).Err())
	require.NoError(t, admin.Do(t.Context(), "CONFIG", "SET", "requirepass", "right").Err())
	t.Cleanup(func() { _ = admin.Do(context.Background(), "CONFIG", "SET", "requirepass", "").Err() }) // for the server's shutdown
	wrong := redis.NewClient(&redis.Options{Addr: server.Addr, Password: "wrong"})
	t.Cleanup(func() { _ = wrong.Close() })
	msg := func() *message.Message { return message.NewMessage(watermill.NewUUID(), []byte("x")) }

	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: wrong}, nil)
	require.NoError(t, err)
	defer pub.Close()
	require.ErrorContains(t, pub.Publish("t", msg()), "WRONGPASS")
	_, err = pub.PublishCount(t.Context(), "t", msg())
	require.ErrorContains(t, err, "WRONGPASS")

	failures := make(chan error, 1)
	async, err := redisbus.NewPublisher(redisbus.PublisherConfig{
		Client: wrong, Async: true, OnAsyncError: func(_ string, _ int, err error) { failures <- err },
	}, nil)
	require.NoError(t, err)
	defer async.Close()
	require.NoError(t, async.Publish("t", msg()))
	require.NoError(t, async.Flush(t.Context()))
	assert.Equal(t, uint64(1), async.Stats().AsyncFailed)
	assert.ErrorContains(t, <-failures, "WRONGPASS")

	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: wrong}, nil)
	require.NoError(t, err)
	defer streams.Close()
	_, err = streams.PublishIDs(t.Context(), "s", msg())
	require.ErrorContains(t, err, "WRONGPASS")
}
