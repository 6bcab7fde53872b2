package redisbus_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// pubSubFeatures are what the best-effort Pub/Sub promises: within one
// Subscriber instance every message is delivered once and in order; nothing
// survives for a subscriber that was not connected.
var pubSubFeatures = tests.Features{
	ConsumerGroups:                      false,
	ExactlyOnceDelivery:                 true,
	GuaranteedOrder:                     true,
	GuaranteedOrderWithSingleSubscriber: true,
	Persistent:                          false,
	RequireSingleInstance:               true,
}

func newPubSub(t *testing.T, sharded, async bool) (message.Publisher, message.Subscriber) {
	client := pubsubtest.NewClient(t)
	logger := watermill.NewStdLogger(false, false)
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Sharded: sharded, Async: async}, logger)
	require.NoError(t, err)
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, Sharded: sharded}, logger)
	require.NoError(t, err)
	return pub, sub
}

func TestPubSubConformance(t *testing.T) {
	t.Parallel()
	pubsubtest.RunUniversal(t, pubSubFeatures,
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, false, false) },
		nil)
}

func TestPubSubConformanceSharded(t *testing.T) {
	t.Parallel()
	pubsubtest.RunUniversal(t, pubSubFeatures,
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, true, false) },
		nil)
}

// Async publishing keeps every promise above: messages of one publishing
// goroutine reach Redis in order, and none is lost while Redis is up.
func TestPubSubConformanceAsync(t *testing.T) {
	t.Parallel()
	pubsubtest.RunUniversal(t, pubSubFeatures,
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, false, true) },
		nil)
}
