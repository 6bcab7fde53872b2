package redisbus_test

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Redis refusing what the subscriber asks: full (maxmemory with
// noeviction, the usual setting for streams), a key of the wrong type.

// fillRedis makes the server refuse writes that need memory.
func fillRedis(t *testing.T, client redis.UniversalClient) {
	t.Helper()
	require.NoError(t, client.ConfigSet(context.Background(), "maxmemory-policy", "noeviction").Err())
	require.NoError(t, client.ConfigSet(context.Background(), "maxmemory", "1").Err())
	require.Error(t, client.Set(context.Background(), "probe", "x", 0).Err(), "Redis should be full")
}

func emptyRedis(t *testing.T, client redis.UniversalClient) {
	t.Helper()
	require.NoError(t, client.ConfigSet(context.Background(), "maxmemory", "0").Err())
}

func streamLen(t *testing.T, client redis.UniversalClient, stream string) int64 {
	t.Helper()
	n, err := client.XLen(context.Background(), stream).Result()
	require.NoError(t, err)
	return n
}

// A message to dead-letter while Redis is full stays pending, and moves
// once Redis has room; acks of other messages go on meanwhile, and the
// failure is logged once and counted.
func TestStreamsDeadLetterWhileRedisIsFull(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	logger := pubsubtest.NewRecordingLogger()
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, MaxDeliveries: 1, MaxInFlight: 2}, logger)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "bad", "good")
	bad, good := next(t, ch), next(t, ch)
	require.Equal(t, "bad", string(bad.Payload))

	fillRedis(t, client)
	bad.Nack() // its only delivery failed: dead-letter it
	require.Eventually(t, func() bool { return sub.Stats().DeadLetterFailures >= 3 }, waitTimeout, time.Millisecond,
		"the dead letter is tried again")
	good.Ack()
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, group) == 1 }, waitTimeout, time.Millisecond,
		"acks go on while the dead letter waits")
	assert.Zero(t, streamLen(t, client, topic+":dead"))
	assert.Zero(t, sub.Stats().DeadLettered)
	assert.Len(t, logger.Find(watermill.ErrorLogLevel, "Cannot store a dead letter"), 1, "logged once, however often it is tried")

	emptyRedis(t, client)
	require.Eventually(t, func() bool { return streamLen(t, client, topic+":dead") == 1 }, 2*waitTimeout, time.Millisecond)
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, group) == 0 }, waitTimeout, time.Millisecond)
	assert.Equal(t, uint64(1), sub.Stats().DeadLettered)
}

// A dead-letter key that is not a stream: the entry stays pending (nothing
// lost), other topics' acks are not held up, and it moves once the key is
// fixed.
func TestStreamsDeadLetterKeyOfTheWrongType(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, other, group := pubsubtest.Topic(t), pubsubtest.Topic(t), "g"
	require.NoError(t, client.Set(t.Context(), topic+":dead", "not a stream", 0).Err())
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, MaxDeliveries: 1}, nil)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	otherCh, err := sub.Subscribe(t.Context(), other)
	require.NoError(t, err)

	publish(t, pub, topic, "bad")
	next(t, ch).Nack()
	require.Eventually(t, func() bool { return sub.Stats().DeadLetterFailures > 0 }, waitTimeout, time.Millisecond)
	publish(t, pub, other, "x", "y")
	assert.Equal(t, []string{"x", "y"}, receive(t, otherCh, 2))
	require.Eventually(t, func() bool { return pendingCount(t, client, other, group) == 0 }, waitTimeout, time.Millisecond,
		"another topic's acks are not held up")
	assert.Equal(t, int64(1), pendingCount(t, client, topic, group), "the entry is not lost")

	require.NoError(t, client.Del(t.Context(), topic+":dead").Err())
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, group) == 0 }, 2*waitTimeout, 10*time.Millisecond)
	assert.Equal(t, []string{"bad"}, deadLetters(t, client, topic))
}

// A consumer of an existing group starts, reads and acks while Redis is
// full: creating the group (and leasing its name) must not need room.
func TestStreamsSubscribeToAnExistingGroupWhileRedisIsFull(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	publish(t, pub, topic, "a", "b", "c")

	fillRedis(t, client)
	for _, consumer := range []string{"", "worker-1"} { // default and explicit names
		sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, Consumer: consumer}, nil)
		ch, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		if consumer == "" {
			assert.Equal(t, []string{"a", "b", "c"}, receive(t, ch, 3))
		}
		require.NoError(t, sub.Close())
	}
	assert.Zero(t, pendingCount(t, client, topic, group))
}

// The default trimming never removes what a consumer group has not read
// and acked, however long it lags; it removes what every group consumed.
func TestStreamsDefaultTrimmingKeepsWhatGroupsNeed(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	// Two groups: "fast" reads and acks, "slow" reads and never acks, and
	// "lagging" never reads at all at first.
	for _, g := range []string{"fast", "slow", "lagging"} {
		require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, g, "0").Err())
	}
	const total = 3000
	for i := 0; i < total; i += 100 {
		publish(t, pub, topic, payloads("m", 100)...)
	}
	read := func(group string, n int64, ack bool) {
		streams, err := client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{topic, ">"}, Count: n, Block: -1}).Result()
		require.NoError(t, err)
		if ack {
			var ids []string
			for _, m := range streams[0].Messages {
				ids = append(ids, m.ID)
			}
			require.NoError(t, client.XAck(t.Context(), topic, group, ids...).Err())
		}
	}
	read("fast", total, true)
	read("slow", total, false)

	// Trims run about once a second per topic: publish until one has run
	// since everything above.
	trimmedBefore := pub.Stats().Trimmed
	for pub.Stats().Trimmed == trimmedBefore {
		publish(t, pub, topic, "tick")
		if streamLen(t, client, topic) > total+100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	assert.GreaterOrEqual(t, streamLen(t, client, topic), int64(total), "nothing the lagging group has not read is trimmed")

	// Once every group has acked, the next trims remove the backlog.
	read("lagging", total+1000, true)
	pending, err := client.XPendingExt(t.Context(), &redis.XPendingExtArgs{Stream: topic, Group: "slow", Start: "-", End: "+", Count: total + 1000}).Result()
	require.NoError(t, err)
	var ids []string
	for _, p := range pending {
		ids = append(ids, p.ID)
	}
	require.NoError(t, client.XAck(t.Context(), topic, "slow", ids...).Err())
	read("fast", total, true)
	read("slow", total, true)
	require.Eventually(t, func() bool {
		publish(t, pub, topic, "tick")
		return streamLen(t, client, topic) < 300
	}, waitTimeout, 20*time.Millisecond, "consumed entries are trimmed")
	assert.Zero(t, pub.Stats().TrimmedUnconsumed)
}

// A stream without consumer groups is not trimmed by default: its entries
// wait for the first group, which starts at the beginning.
func TestStreamsDefaultTrimmingLeavesStreamsWithoutGroups(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	publish(t, pub, topic, payloads("m", 500)...)
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond { // a trim interval and more
		publish(t, pub, topic, "tick")
		time.Sleep(50 * time.Millisecond)
	}
	assert.Zero(t, pub.Stats().Trimmed)
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "first"}, nil)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	assert.Equal(t, "m0", string(next(t, ch).Payload), "the first group gets everything published before it")
}

// A MaxLen cap removes what groups have not consumed, but counts and logs
// it.
func TestStreamsTrimCapCountsWhatGroupsLost(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	logger := pubsubtest.NewRecordingLogger()
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client, Trim: redisbus.StreamTrim{MaxLen: 100}}, logger)
	require.NoError(t, err)
	defer pub.Close()
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, "g", "0").Err())

	msgs := make([]*message.Message, 300)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
	}
	require.NoError(t, pub.Publish(topic, msgs...))
	assert.Equal(t, int64(100), streamLen(t, client, topic))
	assert.Equal(t, redisbus.StreamsPublisherStats{Trimmed: 200, TrimmedUnconsumed: 200}, pub.Stats())
	assert.NotEmpty(t, logger.Find(watermill.ErrorLogLevel, "had not consumed"))

	// Consumed entries removed by the cap are not losses.
	streams, err := client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{topic, ">"}, Count: 1000, Block: -1}).Result()
	require.NoError(t, err)
	var ids []string
	for _, m := range streams[0].Messages {
		ids = append(ids, m.ID)
	}
	require.NoError(t, client.XAck(t.Context(), topic, "g", ids...).Err())
	require.NoError(t, pub.Publish(topic, msgs[:100]...))
	assert.Equal(t, redisbus.StreamsPublisherStats{Trimmed: 300, TrimmedUnconsumed: 200}, pub.Stats())
}

// A pending entry deleted from the stream (XDEL, or trimmed by someone
// else) is counted and logged when the consumer comes to it, not acked
// silently.
func TestStreamsPendingEntryDeletedIsCounted(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	ids, err := pub.PublishIDs(t.Context(), topic, message.NewMessage("a", []byte("a")), message.NewMessage("b", []byte("b")))
	require.NoError(t, err)
	// A crashed consumer read both (same name as below, so they are its
	// own pending entries), and another's pending ones (claimed below).
	require.NoError(t, client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: group, Consumer: "worker-1", Streams: []string{topic, ">"}, Count: 2, Block: -1}).Err())
	require.NoError(t, client.XDel(t.Context(), topic, ids[0]).Err())

	logger := pubsubtest.NewRecordingLogger()
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, Consumer: "worker-1"}, logger)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, receive(t, ch, 1))
	assert.Equal(t, uint64(1), sub.Stats().Trimmed)
	assert.NotEmpty(t, logger.Find(watermill.ErrorLogLevel, "trimmed or deleted"))
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, group) == 0 }, waitTimeout, time.Millisecond)

	// The same for an entry claimed from a dead consumer.
	require.NoError(t, sub.Close())
	claimed, err := pub.PublishIDs(t.Context(), topic, message.NewMessage("c", []byte("c")))
	require.NoError(t, err)
	require.NoError(t, client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: group, Consumer: "dead", Streams: []string{topic, ">"}, Count: 1, Block: -1}).Err())
	require.NoError(t, client.XDel(t.Context(), topic, claimed[0]).Err())
	claimer := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, Consumer: "claimer", ClaimMinIdle: 10 * time.Millisecond}, nil)
	_, err = claimer.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return claimer.Stats().Trimmed == 1 }, waitTimeout, time.Millisecond)
}

// While every consumer slot is busy, a nacked message whose delay is over
// waits without the dispatcher spinning.
func TestStreamsDueNackWithBusyConsumersDoesNotSpin(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "g", MaxInFlight: 2, NackResendDelay: time.Millisecond,
	}, nil)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "a", "b", "c", "d")
	a, b := next(t, ch), next(t, ch)
	a.Nack()
	// b and this one fill both slots; what waits is due (a, due in 1 ms,
	// and c or d, whichever is not this one: a distant Redis may not have
	// delivered c yet when a is due again).
	c := next(t, ch)
	time.Sleep(20 * time.Millisecond)

	before := cpuTime(t)
	time.Sleep(500 * time.Millisecond)
	used := cpuTime(t) - before
	assert.Less(t, used, 200*time.Millisecond, "the process used %s of CPU while only waiting", used)
	b.Ack()
	c.Ack()
	handled := append(receive(t, ch, 2), string(a.Payload), string(b.Payload), string(c.Payload))
	assert.ElementsMatch(t, []string{"a", "a", "b", "c", "d"}, handled, "every message once, a twice (nacked)")
}

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var usage syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &usage))
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// 10,000 entries pending with a consumer that crashed: it restarts and
// resumes every one, each handled once, none dead-lettered.
func TestStreamsTenThousandPendingEntriesResumed(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	const total = 10_000
	sent := payloads("job-", total)
	for i := 0; i < total; i += 1000 {
		publish(t, pub, topic, sent[i:i+1000]...)
	}
	require.NoError(t, client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: group, Consumer: "worker-1", Streams: []string{topic, ">"}, Count: total, Block: -1}).Err())

	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: group, Consumer: "worker-1", ClaimMinIdle: time.Hour, MaxDeliveries: 2,
	}, nil)
	log := newHandledLog()
	runRouter(t, sub, topic, func(msg *message.Message) error {
		log.add("worker-1", string(msg.Payload))
		return nil
	})
	log.waitAll(t, sent, 2*time.Minute)
	assert.Empty(t, log.duplicates())
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, group) == 0 }, waitTimeout, 10*time.Millisecond)
	assert.Zero(t, streamLen(t, client, topic+":dead"))
}

// A consumer group destroyed under a running Router is recreated, and what
// is published after is delivered.
func TestStreamsGroupDestroyedUnderARouter(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, BlockTime: 50 * time.Millisecond}, nil)
	log := newHandledLog()
	runRouter(t, sub, topic, func(msg *message.Message) error {
		log.add("w", string(msg.Payload))
		return nil
	})
	publish(t, pub, topic, "before")
	log.waitAll(t, []string{"before"}, waitTimeout)
	require.NoError(t, client.XGroupDestroy(t.Context(), topic, group).Err())
	publish(t, pub, topic, "after")
	log.waitAll(t, []string{"after"}, waitTimeout)
}

// When Redis is full, Pub/Sub goes on (PUBLISH stores nothing) while a
// Streams Publish fails with Redis' OOM error and stores nothing: the
// table in docs/operating-redis.md.
func TestPublishingWhileRedisIsFull(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	topic := pubsubtest.Topic(t)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: client})
	sub := newSubscriber(t, redisbus.SubscriberConfig{Client: client}, nil)
	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	streams := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	publish(t, streams, topic+":stream", "before")

	fillRedis(t, client)
	publish(t, pub, topic, "while full")
	assert.Equal(t, []string{"while full"}, receive(t, messages, 1))
	err = streams.Publish(topic+":stream", message.NewMessage(watermill.NewUUID(), []byte("refused")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "OOM")
	assert.Equal(t, int64(1), streamLen(t, client, topic+":stream"))

	emptyRedis(t, client)
	publish(t, streams, topic+":stream", "after")
	assert.Equal(t, int64(2), streamLen(t, client, topic+":stream"))
}
