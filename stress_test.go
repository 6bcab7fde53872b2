//go:build stress

package redisbus_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Run with: go test -tags stress -run Stress -timeout 30m .

func TestPubSubStress(t *testing.T) {
	t.Parallel()
	pubsubtest.RunStress(t, func(t *testing.T) (tests.Features, tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
		return pubSubFeatures,
			func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, false, false) },
			nil
	})
}

func TestStreamsStress(t *testing.T) {
	t.Parallel()
	pubsubtest.RunStress(t, func(t *testing.T) (tests.Features, tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
		server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{AOF: true})
		client := server.Client(t)
		return streamsFeatures(server),
			func(t *testing.T) (message.Publisher, message.Subscriber) { return newStreamsPubSub(t, client, "") },
			func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
				return newStreamsPubSub(t, client, group)
			}
	})
}
