package redisbus_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// primaryWithReplica starts two private servers, the second replicating
// the first, and returns once the replica is in sync. With lag, the
// replication stream reaches the replica that much late, as over a slow or
// busy link (the replica's acknowledgements are not delayed).
func primaryWithReplica(t *testing.T, lag time.Duration) (primary, replica *pubsubtest.Server, link *pubsubtest.Proxy) {
	t.Helper()
	primary = pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	replica = pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	// Redis 7 waits 5 s for more replicas before a diskless full sync.
	require.NoError(t, primary.Client(t).ConfigSet(t.Context(), "repl-diskless-sync-delay", "0").Err())
	link = pubsubtest.NewProxy(t, primary.Addr)
	host, port, _ := strings.Cut(link.Addr(), ":")
	require.NoError(t, replica.Client(t).Do(t.Context(), "REPLICAOF", host, port).Err())
	require.Eventually(t, func() bool {
		info, err := replica.Client(t).Info(t.Context(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, waitTimeout, 5*time.Millisecond, "the replica syncs")
	// Right after a sync, a Redis 7.0 primary may hold the command stream
	// until the replica's first acknowledgement, which a replica sends
	// once a second by itself: a WAIT then takes up to a second. A write
	// confirmed once means the stream flows.
	conn := primary.Client(t).Conn()
	defer conn.Close()
	require.NoError(t, conn.Set(t.Context(), "replica-probe", "2", 0).Err())
	acked, err := conn.Do(t.Context(), "WAIT", 1, waitTimeout.Milliseconds()).Int()
	require.NoError(t, err)
	require.Equal(t, 1, acked, "the replica confirms a write")
	link.DelayOpenConnections(lag)
	return primary, replica, link
}

// With WaitReplicas, Publish returns once the replica has the entries;
// without a replica to confirm, it says so (the entries are stored on the
// primary all the same).
func TestStreamsPublishWaitsForReplicas(t *testing.T) {
	primary, replica, _ := primaryWithReplica(t, 0)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{
		Client: primary.Client(t), WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond,
	})
	publish(t, pub, topic, "a", "b")
	assert.Equal(t, int64(2), streamLen(t, replica.Client(t), topic), "the replica had both when Publish returned")

	// Delayed messages too, with Publish and with PublishOnce.
	later := func(payload string) *message.Message {
		msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
		delay.Message(msg, delay.For(time.Hour))
		return msg
	}
	require.NoError(t, pub.Publish(topic, later("d")))
	once := later("e")
	results, err := pub.PublishOnce(topic, time.Minute, once, once.Copy())
	require.NoError(t, err)
	assert.True(t, results[1].Duplicate)
	assert.Equal(t, int64(2), replica.Client(t).ZCard(t.Context(), redisbus.DelayedKey(topic)).Val(), "the replica had both scheduled")

	replica.Kill(t)
	err = pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("c")))
	require.ErrorIs(t, err, redisbus.ErrNotReplicated)
	assert.Contains(t, err.Error(), "0 of 1 confirmed within 200ms")
	assert.Equal(t, int64(3), streamLen(t, primary.Client(t), topic), "stored on the primary")
}

func TestWaitReplicasConfig(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: time.Second})
	t.Cleanup(func() { _ = client.Close() })
	shortRead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = shortRead.Close() })
	for _, c := range []struct {
		config redisbus.StreamsPublisherConfig
		field  string
	}{
		{redisbus.StreamsPublisherConfig{Client: client, WaitReplicas: -1}, "StreamsPublisherConfig.WaitReplicas"},
		{redisbus.StreamsPublisherConfig{Client: client, WaitReplicas: 1, WaitTimeout: time.Second}, "StreamsPublisherConfig.WaitTimeout"},
		{redisbus.StreamsPublisherConfig{Client: client, WaitReplicas: 1, WaitTimeout: time.Nanosecond}, "StreamsPublisherConfig.WaitTimeout"},
		{redisbus.StreamsPublisherConfig{Client: client, WaitReplicas: 1, WaitTimeout: 999 * time.Microsecond}, "StreamsPublisherConfig.WaitTimeout"},
		{redisbus.StreamsPublisherConfig{Client: redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}}), WaitReplicas: 1}, "StreamsPublisherConfig.WaitReplicas"},
		{redisbus.StreamsPublisherConfig{Client: shortRead, WaitReplicas: 1}, "StreamsPublisherConfig.WaitTimeout"}, // the default 1s
	} {
		_, err := redisbus.NewStreamsPublisher(c.config, nil)
		var configErr *redisbus.ConfigError
		require.ErrorAs(t, err, &configErr)
		assert.Equal(t, c.field, configErr.Field)
		require.ErrorAs(t, c.config.Validate(), &configErr, "Validate agrees with NewStreamsPublisher")
		assert.Equal(t, c.field, configErr.Field)
	}
}

// failover publishes from four goroutines until the primary is killed
// (SIGKILL, after about 500 acknowledged messages), promotes the replica
// and returns how many acknowledged messages the new primary lacks. The
// replication stream lags 5 ms, as it may on a real network, and what is
// on its way dies with the primary's host.
func failover(t *testing.T, waitReplicas int) (acknowledged, lost int) {
	primary, replica, link := primaryWithReplica(t, 5*time.Millisecond)
	topic := pubsubtest.Topic(t)
	// Once the primary is gone the publishers stop at their first error:
	// go-redis' own dial retries would only slow the test down.
	client := redis.NewClient(&redis.Options{Addr: primary.Addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = client.Close() })
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{
		Client: client, WaitReplicas: waitReplicas, Trim: redisbus.StreamTrim{Unbounded: true},
	})
	var mu sync.Mutex
	acked := map[string]bool{}
	killed := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				msg := message.NewMessage(watermill.NewUUID(), []byte("order"))
				if err := pub.Publish(topic, msg); err != nil {
					return // the primary is gone
				}
				mu.Lock()
				acked[msg.UUID] = true
				n := len(acked)
				mu.Unlock()
				if n >= 500 {
					once.Do(func() {
						link.FreezeOpenConnections()
						primary.Kill(t)
						close(killed)
					})
				}
			}
		})
	}
	<-killed
	wg.Wait()
	promoted := replica.Client(t)
	require.NoError(t, promoted.Do(t.Context(), "REPLICAOF", "NO", "ONE").Err())
	entries, err := promoted.XRange(t.Context(), topic, "-", "+").Result()
	require.NoError(t, err)
	stored := map[string]bool{}
	for _, e := range entries {
		stored[e.Values[redisbus.StreamsFieldUUID].(string)] = true
	}
	for id := range acked {
		if !stored[id] {
			lost++
		}
	}
	return len(acked), lost
}

// Redis replicates asynchronously: a primary killed under load takes with
// it what it acknowledged and had not yet sent to its replica. With
// WaitReplicas nothing acknowledged is lost, run after run.
func TestStreamsAcknowledgedMessagesSurviveFailoverWithWaitReplicas(t *testing.T) {
	for run := 1; run <= 5; run++ {
		acknowledged, lost := failover(t, 1)
		assert.Zero(t, lost, "run %d: %d of %d acknowledged messages lost with WaitReplicas 1", run, lost, acknowledged)
	}
	// Without it, what the replication stream had not delivered is gone.
	acknowledged, lost := failover(t, 0)
	t.Logf("without WaitReplicas: %d of %d acknowledged messages lost in the failover", lost, acknowledged)
	assert.Positive(t, lost, "the test kills the primary while its replica lags: without WAIT some acknowledged messages are lost")
}
