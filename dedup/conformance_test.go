package dedup_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Watermill's universal suite, with every message published through a
// dedup Publisher: over a StreamsPublisher (PublishOnce, a script per
// message), and over the same publisher hidden behind another type (the
// claims and marks around any publisher). The suite publishes every UUID
// once, so nothing may be left out, and every promise of redisbus Streams
// must hold as it does without the guard (streams_conformance_test.go).
func TestPublisherConformance(t *testing.T) {
	t.Parallel()
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{AOF: true})
	client := server.Client(t)
	features := tests.Features{
		ConsumerGroups:                      true,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		NewSubscriberReceivesOldMessages:    true,
		RestartServiceCommand:               server.RestartCommand(),
	}
	for name, hide := range map[string]bool{"StreamsPublisher": false, "any publisher": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pubSub := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
				return guardedPubSub(t, client, group, hide)
			}
			pubsubtest.RunUniversal(t, features,
				func(t *testing.T) (message.Publisher, message.Subscriber) { return pubSub(t, "") },
				pubSub)
		})
	}
}

// hiddenPublisher is a publisher whose type the dedup Publisher does not
// know.
type hiddenPublisher struct{ message.Publisher }

func guardedPubSub(t *testing.T, client redis.UniversalClient, group string, hide bool) (message.Publisher, message.Subscriber) {
	if group == "" {
		group = "group-" + watermill.NewShortUUID()
	}
	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	var inner message.Publisher = streams
	if hide {
		inner = hiddenPublisher{streams}
	}
	pub, err := dedup.NewPublisher(inner, dedup.Config{Client: client, Prefix: "conformance:" + watermill.NewShortUUID() + ":"}, nil)
	require.NoError(t, err)
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client:          client,
		ConsumerGroup:   group,
		NackResendDelay: 5 * time.Millisecond,
		NackMaxDelay:    20 * time.Millisecond,
		MaxDeliveries:   -1,
		CloseTimeout:    50 * time.Millisecond,
	}, nil)
	require.NoError(t, err)
	return pub, sub
}
