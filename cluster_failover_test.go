package redisbus_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// underTest names the connections of the client the failover test hands
// to redisbus, so that they can be told apart from the test's own.
const underTest = "redisbus-under-test"

// On a Redis Cluster of 3 masters with a replica each, Streams and Pub/Sub
// carry on by themselves, with no restart of anything, when the master of
// their topics hands its slots to its replica (CLUSTER FAILOVER) and when
// it is killed (SIGKILL, its replica made to take over): 4 Streams
// publishers and a consumer group of 3 on one stream, 2 sharded and 2
// plain Pub/Sub subscribers. The graceful failover loses nothing
// acknowledged; the kill loses at most what the master acknowledged in its
// last moments (Redis replicates asynchronously; WaitReplicas, which would
// prevent it, needs one primary), and everything acknowledged before that
// or after it arrives; the group ends with nothing pending; the
// subscriptions are on as many connections as before; and closing
// everything leaves no goroutine and no connection behind.
func TestStreamsAndPubSubCarryOnThroughClusterFailovers(t *testing.T) {
	cluster := pubsubtest.StartCluster(t, 3)
	cluster.AddReplicas(t)
	goroutines := goleak.IgnoreCurrent()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs, ClientName: underTest})
	defer client.Close()

	// One hash tag: every topic is on the master that fails over.
	tag := "{" + pubsubtest.Topic(t) + "}"
	streamsTopic, shardedTopic, plainTopic := tag+"streams", tag+"sharded", tag+"plain"
	master := cluster.Owner(t, cluster.Slot(t, tag))
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			assert.NoError(t, closers[i]())
		}
		closers = nil
	}
	defer closeAll()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	publishing, stopPublishing := context.WithCancel(ctx)
	defer stopPublishing()

	streams := newFlow(1) // one receiver: the group
	for range 3 {
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client: client, ConsumerGroup: "workers",
			// Short, so that entries a killed master's replica never
			// heard were acked are claimed within the test.
			ConsumerLease: time.Second, ClaimMinIdle: time.Second, ClaimInterval: 200 * time.Millisecond,
		}, nil)
		require.NoError(t, err)
		closers = append(closers, sub.Close)
		entries, err := sub.Subscribe(ctx, streamsTopic)
		require.NoError(t, err)
		go streams.consume(0, entries)
	}
	for range 4 {
		pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
		require.NoError(t, err)
		closers = append(closers, pub.Close)
		go streams.publish(publishing, pub, streamsTopic)
	}

	pubsubs := map[string]*flow{}
	for _, sharded := range []bool{true, false} {
		topic, mode := plainTopic, "plain Pub/Sub"
		if sharded {
			topic, mode = shardedTopic, "sharded Pub/Sub"
		}
		f := newFlow(2)
		pubsubs[mode] = f
		for i := range 2 {
			sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, Sharded: sharded}, nil)
			require.NoError(t, err)
			closers = append(closers, sub.Close)
			messages, err := sub.Subscribe(ctx, topic)
			require.NoError(t, err)
			go f.consume(i, messages)
		}
		pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Sharded: sharded}, nil)
		require.NoError(t, err)
		closers = append(closers, pub.Close)
		go f.publish(publishing, pub, topic)
	}
	flows := map[string]*flow{"Streams": streams}
	for mode, f := range pubsubs {
		flows[mode] = f
	}
	for what, f := range flows {
		f.awaitFlowSince(t, time.Now(), f.mark(), "the start of "+what)
	}
	subscriptions := subscribedConnections(t, cluster)

	failovers := []struct {
		what string
		do   func(testing.TB, int)
	}{
		{"a graceful failover (CLUSTER FAILOVER)", cluster.Failover},
		{"the master killed (SIGKILL)", cluster.KillMaster},
	}
	var killed time.Time
	for _, failover := range failovers {
		start := time.Now()
		killed = start // the last one kills
		failover.do(t, master)
		took := time.Since(start)
		for what, f := range flows {
			f.awaitFlowSince(t, time.Now(), f.mark(), failover.what)
			t.Logf("%s (Redis took %s): %s: longest pause in arrivals %s", failover.what, took.Round(time.Millisecond),
				what, f.longestPause(start).Round(time.Millisecond))
		}
		assert.Equal(t, subscriptions, subscribedConnections(t, cluster), "connections with subscriptions after %s", failover.what)
		// A master turned replica may keep its shard channels' subscribers
		// and pass them what it replicates, but SPUBLISH counts only the
		// master's own (wsroute routes by that count): they must move.
		require.Eventually(t, func() bool { return len(shardSubscribersOffMasters(t, cluster)) == 0 }, recoveryBound, 10*time.Millisecond,
			"shard channel subscriptions left on a replica after %s: %v", failover.what, shardSubscribersOffMasters(t, cluster))
	}

	stopPublishing()
	// Everything acknowledged arrives, but what the killed master had not
	// yet sent its replica: at most its last moments' writes.
	lastMoments := killed.Add(-time.Second)
	require.Eventually(t, func() bool {
		return len(streams.unreceived(lastMoments)) == 0 && len(streams.unreceived(time.Now())) == len(streams.unreceivedBetween(lastMoments, killed))
	}, waitTimeout, 10*time.Millisecond, "acknowledged Streams messages missing: %v", streams.unreceived(time.Now()))
	t.Logf("acknowledged Streams messages lost by the kill: %d of %d; arrivals of a message a second time: %d",
		len(streams.unreceived(time.Now())), streams.mark(), streams.repeats)
	require.Eventually(t, func() bool {
		return pendingCount(t, client, streamsTopic, "workers") == 0
	}, waitTimeout, 10*time.Millisecond, "the group still has entries pending")

	closeAll()
	require.NoError(t, client.Close())
	require.Eventually(t, func() bool {
		return len(connectionsNamed(t, cluster, underTest)) == 0
	}, waitTimeout, 10*time.Millisecond, "connections left open after Close: %v", connectionsNamed(t, cluster, underTest))
	// go-redis probes a node it could not dial once a second until its
	// pool closes, so the last probe may end up to a second after Close.
	require.Eventually(t, func() bool {
		return goleak.Find(goroutines) == nil
	}, waitTimeout, 10*time.Millisecond, "goroutines left after Close: %v", goleak.Find(goroutines))
}

// connectionsNamed lists, as "address: client list line", the connections
// named name on every running node of cluster.
func connectionsNamed(t *testing.T, cluster *pubsubtest.Cluster, name string) []string {
	t.Helper()
	var found []string
	for _, addr := range append(append([]string{}, cluster.Addrs...), cluster.Replicas...) {
		if addr == "" {
			continue
		}
		node := redis.NewClient(&redis.Options{Addr: addr})
		for _, line := range clientsNamed(t, node, name) {
			found = append(found, addr+": "+line)
		}
		_ = node.Close()
	}
	return found
}

// subscribedConnections counts the connections under test that have
// subscriptions (to channels or shard channels).
func subscribedConnections(t *testing.T, cluster *pubsubtest.Cluster) int {
	t.Helper()
	n := 0
	for _, line := range connectionsNamed(t, cluster, underTest) {
		if !strings.Contains(line, " sub=0 ") || !strings.Contains(line, " ssub=0 ") {
			n++
		}
	}
	return n
}

// shardSubscribersOffMasters lists the connections under test subscribed
// to shard channels on a node that is not a master.
func shardSubscribersOffMasters(t *testing.T, cluster *pubsubtest.Cluster) []string {
	t.Helper()
	var off []string
	for _, line := range connectionsNamed(t, cluster, underTest) {
		addr, _, _ := strings.Cut(line, ": ")
		if !strings.Contains(line, " ssub=0 ") && !slices.Contains(cluster.Addrs, addr) {
			off = append(off, line)
		}
	}
	return off
}
