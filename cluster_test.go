package redisbus_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Watermill's universal suite on a three-master Redis Cluster: topics land
// on different masters, plain PUBLISH is broadcast across the cluster bus,
// shard channels and streams live on the master that owns their slot.
func TestClusterConformance(t *testing.T) {
	t.Parallel()
	cluster := pubsubtest.StartCluster(t, 3)

	for _, sharded := range []bool{false, true} {
		t.Run(map[bool]string{false: "PubSub", true: "ShardedPubSub"}[sharded], func(t *testing.T) {
			t.Parallel()
			pubsubtest.RunUniversal(t, pubSubFeatures,
				func(t *testing.T) (message.Publisher, message.Subscriber) {
					client := cluster.Client(t)
					logger := watermill.NewStdLogger(false, false)
					pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Sharded: sharded}, logger)
					require.NoError(t, err)
					sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, Sharded: sharded}, logger)
					require.NoError(t, err)
					return pub, sub
				},
				nil)
		})
	}

	t.Run("Streams", func(t *testing.T) {
		t.Parallel()
		client := cluster.Client(t)
		// As on one server, without TestReconnect: restarting a cluster
		// node is a failover, not what the suite's restart means.
		features := streamsFeatures(nil)
		pubsubtest.RunUniversal(t, features,
			func(t *testing.T) (message.Publisher, message.Subscriber) {
				return newStreamsPubSub(t, client, "")
			},
			func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
				return newStreamsPubSub(t, client, group)
			})
	})
}
