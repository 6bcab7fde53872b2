package redisbus_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
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

// When a shard channel's slot moves to another master, the old owner
// unsubscribes its subscribers (an SUNSUBSCRIBE they did not ask for). The
// subscriber must subscribe again on the new owner and report the gap like
// any reconnection; a topic subscribed after the move, by a client that
// still maps the slot to the old owner, must follow the MOVED redirection.
func TestShardedSubscriberFollowsASlotMigration(t *testing.T) {
	t.Parallel()
	cluster := pubsubtest.StartCluster(t, 3)
	client := cluster.Client(t)
	logger := pubsubtest.NewRecordingLogger()
	reconnects := make(chan redisbus.LossWindow, 10)
	sub := newSubscriber(t, redisbus.SubscriberConfig{
		Client: client, Sharded: true,
		OnReconnect: func(w redisbus.LossWindow) { reconnects <- w },
	}, logger)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: client, Sharded: true})
	ctx := t.Context()

	topic := pubsubtest.Topic(t)
	messages, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	publish(t, pub, topic, "before the move")
	require.Equal(t, []string{"before the move"}, receive(t, messages, 1))

	slot := cluster.Slot(t, topic)
	before := time.Now()
	cluster.MoveSlot(t, slot, (cluster.Owner(t, slot)+1)%len(cluster.Addrs))
	var loss redisbus.LossWindow
	select {
	case loss = <-reconnects:
	case <-time.After(waitTimeout):
		t.Fatalf("the subscriber did not subscribe again within %s of the slot's move: it is deaf (stats %+v)", waitTimeout, sub.Stats())
	}
	t.Logf("deaf for %s after the slot moved (loss window)", loss.To.Sub(loss.From))
	assert.Equal(t, []string{topic}, loss.Topics)
	assert.False(t, loss.From.Before(before), "the window starts when Redis unsubscribed the channel")
	assert.True(t, loss.To.After(loss.From))
	assert.ErrorContains(t, loss.Err, "slot")
	stats := sub.Stats()
	assert.Equal(t, uint64(1), stats.Reconnects)
	assert.Equal(t, loss, stats.LastLoss)
	assert.Len(t, logger.Find(watermill.ErrorLogLevel, "Redis unsubscribed"), 1)
	assert.Len(t, logger.Find(watermill.InfoLogLevel, "restored"), 1)

	receivers, err := pub.PublishCount(ctx, topic, message.NewMessage(watermill.NewUUID(), []byte("after the move")))
	require.NoError(t, err)
	assert.Equal(t, int64(1), receivers, "SPUBLISH on the new owner reaches the subscriber")
	assert.Equal(t, []string{"after the move"}, receive(t, messages, 1))

	// The client still maps the next slot to its old owner: SSUBSCRIBE
	// goes there first and is redirected.
	later := pubsubtest.Topic(t) + "-later"
	slot = cluster.Slot(t, later)
	cluster.MoveSlot(t, slot, (cluster.Owner(t, slot)+1)%len(cluster.Addrs))
	messages, err = sub.Subscribe(ctx, later)
	require.NoError(t, err)
	receivers, err = pub.PublishCount(ctx, later, message.NewMessage(watermill.NewUUID(), []byte("after the redirection")))
	require.NoError(t, err)
	assert.Equal(t, int64(1), receivers)
	assert.Equal(t, []string{"after the redirection"}, receive(t, messages, 1))
	assert.Empty(t, reconnects, "subscribing somewhere else than first asked loses nothing")
}

// A consumer group's subscriber reads on through a move of its stream's
// slot: while the slot migrates, the old owner answers ASK for the stream
// (it moved already), and after the move, MOVED. Every message published
// before, during and after is delivered once and acked, and Close hands
// back nothing it should not: no entry is left pending.
func TestStreamsSubscriberFollowsASlotMigration(t *testing.T) {
	t.Parallel()
	cluster := pubsubtest.StartCluster(t, 3)
	client := cluster.Client(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g"}, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "before")
	require.Equal(t, []string{"before"}, receive(t, messages, 1))

	slot := cluster.Slot(t, topic)
	finish := cluster.BeginSlotMove(t, slot, (cluster.Owner(t, slot)+1)%len(cluster.Addrs))
	publish(t, pub, topic, "during 1", "during 2")
	require.Equal(t, []string{"during 1", "during 2"}, receive(t, messages, 2), "while the slot migrates")
	finish()
	publish(t, pub, topic, "after")
	require.Equal(t, []string{"after"}, receive(t, messages, 1), "after the slot moved")

	require.NoError(t, sub.Close())
	pending, err := client.XPending(t.Context(), topic, "g").Result()
	require.NoError(t, err)
	assert.Zero(t, pending.Count, "entries left pending")
}
