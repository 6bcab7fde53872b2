package redisbus_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// streamsFeatures are what the Streams Pub/Sub promises. Every test of the
// suite runs, TestReconnect included: RestartServiceCommand restarts a
// private AOF-enabled redis-server. A nil server leaves TestReconnect out.
func streamsFeatures(server *pubsubtest.Server) tests.Features {
	var restart []string
	if server != nil {
		restart = server.RestartCommand()
	}
	return tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		RequireSingleInstance:               false,
		NewSubscriberReceivesOldMessages:    true,
		RestartServiceCommand:               restart,
	}
}

// newStreamsPubSub creates a Streams publisher and subscriber. Each call
// without a group gets a new group, which starts at the beginning of the
// stream: so a new subscriber receives old messages, as the suite expects
// of a persistent Pub/Sub.
func newStreamsPubSub(t *testing.T, client redis.UniversalClient, group string) (message.Publisher, message.Subscriber) {
	if group == "" {
		group = "group-" + watermill.NewShortUUID()
	}
	logger := watermill.NewStdLogger(false, false)
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, logger)
	require.NoError(t, err)
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client:        client,
		ConsumerGroup: group,
		// The suite nacks hundreds of times in a row; keep the backoff
		// short so it finishes in seconds.
		NackResendDelay: 5 * time.Millisecond,
		NackMaxDelay:    20 * time.Millisecond,
		MaxDeliveries:   -1,
		// Several tests take messages they never ack and then close the
		// subscriber; Close need not wait for those acks.
		CloseTimeout: 50 * time.Millisecond,
	}, logger)
	require.NoError(t, err)
	return pub, sub
}

func TestStreamsConformance(t *testing.T) {
	t.Parallel()
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{AOF: true})
	client := server.Client(t)
	pubsubtest.RunUniversal(t, streamsFeatures(server),
		func(t *testing.T) (message.Publisher, message.Subscriber) {
			return newStreamsPubSub(t, client, "")
		},
		func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
			return newStreamsPubSub(t, client, group)
		})
}
