package redisbus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// A topic's inbox is bounded in bytes as well as in messages: big
// messages waiting for a slow consumer cost at most InboxBytes (and one
// message), the overflow policy choosing which go.
func TestInboxIsBoundedInBytes(t *testing.T) {
	for _, policy := range []redisbus.OverflowPolicy{redisbus.DropOldest, redisbus.DropNewest} {
		t.Run(policy.String(), func(t *testing.T) {
			sub := newSubscriber(t, redisbus.SubscriberConfig{InboxBytes: 2000, InboxOverflow: policy}, nil)
			pub := newPublisher(t, redisbus.PublisherConfig{})
			topic := pubsubtest.Topic(t)
			require.NoError(t, sub.SubscribeInitialize(topic))
			for i := range 6 {
				publish(t, pub, topic, fmt.Sprintf("%d%s", i, strings.Repeat("x", 399)))
			}
			flush(t, sub)
			stats := sub.Stats()
			assert.Equal(t, uint64(6), stats.Received)
			kept := 6 - int(stats.Dropped)
			assert.LessOrEqual(t, kept, 3, "~450-byte messages count ~900 bytes each: two fit in 2000, and one more is held for a consumer")
			assert.GreaterOrEqual(t, kept, 2)

			messages, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)
			got := receive(t, messages, kept)
			first := map[redisbus.OverflowPolicy]byte{redisbus.DropOldest: byte('0' + 6 - kept), redisbus.DropNewest: '0'}[policy]
			assert.Equal(t, first, got[0][0], "the policy chose which messages stayed")
		})
	}
}

// A message larger than InboxBytes on its own is still delivered.
func TestInboxTakesALoneMessageOverTheByteLimit(t *testing.T) {
	sub := newSubscriber(t, redisbus.SubscriberConfig{InboxBytes: 100}, nil)
	topic := pubsubtest.Topic(t)
	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	big := strings.Repeat("b", 10_000)
	publish(t, newPublisher(t, redisbus.PublisherConfig{}), topic, big)
	assert.Equal(t, []string{big}, receive(t, messages, 1))
}

// A message its handler always nacks is given up after MaxDeliveries
// deliveries, counted and logged, and the topic moves on.
func TestPubSubMessageNackedEveryTimeIsGivenUp(t *testing.T) {
	logger := pubsubtest.NewRecordingLogger()
	sub := newSubscriber(t, redisbus.SubscriberConfig{MaxDeliveries: 3, NackResendDelay: time.Millisecond}, logger)
	topic := pubsubtest.Topic(t)
	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, newPublisher(t, redisbus.PublisherConfig{}), topic, "poison", "next")

	for range 3 {
		msg := next(t, messages)
		require.Equal(t, "poison", string(msg.Payload))
		msg.Nack()
	}
	assert.Equal(t, []string{"next"}, receive(t, messages, 1))
	assert.Equal(t, uint64(1), sub.Stats().GaveUp)
	assert.NotEmpty(t, logger.Find(watermill.ErrorLogLevel, "dropped"))
}

// Topics nobody subscribes to any more are unsubscribed after
// UnsubscribeAfter, so subscribing per user or per entity does not grow
// without bound; a topic in use stays, and an unsubscribed one can be
// subscribed again.
func TestUnusedTopicsAreUnsubscribed(t *testing.T) {
	const after = 50 * time.Millisecond
	sub := newSubscriber(t, redisbus.SubscriberConfig{UnsubscribeAfter: after}, nil)
	pub := newPublisher(t, redisbus.PublisherConfig{})
	admin := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t)

	kept, err := sub.Subscribe(t.Context(), prefix+":kept")
	require.NoError(t, err)
	for i := range 20 { // a user's session each: subscribe, read, leave
		ctx, cancel := context.WithCancel(t.Context())
		messages, err := sub.Subscribe(ctx, fmt.Sprintf("%s:user-%d", prefix, i))
		require.NoError(t, err)
		publish(t, pub, fmt.Sprintf("%s:user-%d", prefix, i), "hello")
		assert.Equal(t, []string{"hello"}, receive(t, messages, 1))
		cancel()
	}
	require.Eventually(t, func() bool { return sub.Stats().Unsubscribed == 20 }, waitTimeout, 5*time.Millisecond)
	numsub := admin.PubSubNumSub(t.Context(), prefix+":user-0", prefix+":user-19", prefix+":kept").Val()
	assert.Equal(t, map[string]int64{prefix + ":user-0": 0, prefix + ":user-19": 0, prefix + ":kept": 1}, numsub)

	publish(t, pub, prefix+":kept", "still here")
	assert.Equal(t, []string{"still here"}, receive(t, kept, 1))

	again, err := sub.Subscribe(t.Context(), prefix+":user-0")
	require.NoError(t, err)
	publish(t, pub, prefix+":user-0", "welcome back")
	assert.Equal(t, []string{"welcome back"}, receive(t, again, 1))
}

// A topic's unused time starts when Redis confirmed it: a confirmation
// slower than UnsubscribeAfter does not retire the topic under the
// SubscribeInitialize waiting for it (which then failed with "subscriber
// is closed").
func TestSubscribeInitializeSlowerThanUnsubscribeAfter(t *testing.T) {
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	sub := newSubscriber(t, redisbus.SubscriberConfig{Client: client, UnsubscribeAfter: time.Millisecond, HealthCheckInterval: time.Hour}, nil)
	first := pubsubtest.Topic(t)
	require.NoError(t, sub.SubscribeInitialize(first)) // opens the connection
	proxy.DelayOpenConnections(50 * time.Millisecond)

	require.NoError(t, sub.SubscribeInitialize(first+"-slow"))
	require.Eventually(t, func() bool { return sub.Stats().Unsubscribed == 2 }, waitTimeout, time.Millisecond, "both are retired once unused")
}
