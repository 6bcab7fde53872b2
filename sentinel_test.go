package redisbus_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// With clients from redis.NewFailoverClient, Streams and Pub/Sub carry on
// by themselves through a graceful failover (SENTINEL FAILOVER) and a
// primary killed with SIGKILL: publishers, a consumer group's subscriber
// (its blocking reads run on a client it makes from the failover client's
// options) and a Pub/Sub subscriber, with no restart of anything.
func TestStreamsAndPubSubCarryOnThroughSentinelFailovers(t *testing.T) {
	sentinels := pubsubtest.StartSentinels(t, 3)
	client := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: pubsubtest.MasterName, SentinelAddrs: sentinels.Addrs, ClientName: underTest,
	})
	defer client.Close()
	topic := pubsubtest.Topic(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	streams := newFlow(1)
	streamsSub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g"}, nil)
	entries, err := streamsSub.Subscribe(ctx, topic)
	require.NoError(t, err)
	go streams.consume(0, entries)
	go streams.publish(ctx, newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client}), topic)

	pubsub := newFlow(1)
	var windowsMu sync.Mutex
	var windows []redisbus.LossWindow
	pubsubSub := newSubscriber(t, redisbus.SubscriberConfig{Client: client, OnReconnect: func(w redisbus.LossWindow) {
		windowsMu.Lock()
		defer windowsMu.Unlock()
		windows = append(windows, w)
	}}, nil)
	messages, err := pubsubSub.Subscribe(ctx, topic)
	require.NoError(t, err)
	go pubsub.consume(0, messages)
	go pubsub.publish(ctx, newPublisher(t, redisbus.PublisherConfig{Client: client}), topic)

	streams.awaitFlowSince(t, time.Now(), streams.mark(), "the start")
	pubsub.awaitFlowSince(t, time.Now(), pubsub.mark(), "the start")

	for _, failover := range []struct {
		what string
		do   func(testing.TB)
	}{
		{"a graceful failover (SENTINEL FAILOVER)", sentinels.Failover},
		{"the primary killed (SIGKILL)", sentinels.KillPrimary},
	} {
		start := time.Now()
		old := sentinels.Primary(t)
		failover.do(t)
		if strings.Contains(failover.what, "graceful") {
			// The old primary stays one until Sentinel turns it into a
			// replica, about 10 s later: until then, whatever is still
			// connected to it, subscriptions and blocking reads, hears
			// nothing published on the new one.
			require.Eventually(t, func() bool {
				return len(clientsNamed(t, old.Client(t), underTest)) == 0
			}, recoveryBound, 10*time.Millisecond, "connections left on the replaced primary: %v", clientsNamed(t, old.Client(t), underTest))
		}
		streams.awaitFlowSince(t, time.Now(), streams.mark(), failover.what)
		pubsub.awaitFlowSince(t, time.Now(), pubsub.mark(), failover.what)
		t.Logf("%s: longest pause in arrivals: Streams %s, Pub/Sub %s", failover.what,
			streams.longestPause(start).Round(time.Millisecond), pubsub.longestPause(start).Round(time.Millisecond))
	}
	// Nothing acknowledged on the way was lost by the graceful failover
	// (the replica had caught up), and the group delivered each entry
	// once; a killed primary may take its last unreplicated entries along
	// (see WaitReplicas), so only the flow is checked after it.
	require.Zero(t, streamsSub.Stats().Lost)

	// Every Pub/Sub message lost was published within a loss window the
	// subscriber reported (published means Publish returned: the PUBLISH
	// ran shortly before).
	cancel()
	windowsMu.Lock()
	defer windowsMu.Unlock()
	for _, n := range pubsub.unreceived(time.Now().Add(-time.Second)) {
		published := pubsub.ackedAt(n)
		assert.True(t, slices.ContainsFunc(windows, func(w redisbus.LossWindow) bool {
			return !published.Before(w.From) && !published.After(w.To.Add(100*time.Millisecond))
		}), "message %d, published at %s, was lost outside the reported loss windows %v", n, published.Format(time.StampMicro), windows)
	}
}

// clientsNamed returns the CLIENT LIST lines of node's connections named
// name.
func clientsNamed(t *testing.T, node *redis.Client, name string) []string {
	t.Helper()
	list, err := node.ClientList(context.Background()).Result()
	require.NoError(t, err)
	var found []string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if strings.Contains(line, " name="+name+" ") {
			found = append(found, line)
		}
	}
	return found
}
