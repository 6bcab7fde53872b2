package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func newStreamsPublisher(t *testing.T, config redisbus.StreamsPublisherConfig) *redisbus.StreamsPublisher {
	t.Helper()
	if config.Client == nil {
		config.Client = pubsubtest.NewClient(t)
	}
	pub, err := redisbus.NewStreamsPublisher(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	return pub
}

func newStreamsSubscriber(t *testing.T, config redisbus.StreamsSubscriberConfig, logger watermill.LoggerAdapter) *redisbus.StreamsSubscriber {
	t.Helper()
	if config.Client == nil {
		config.Client = pubsubtest.NewClient(t)
	}
	sub, err := redisbus.NewStreamsSubscriber(config, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	return sub
}

// pendingCount is how many entries of the group are unacked.
func pendingCount(t *testing.T, client redis.UniversalClient, topic, group string) int64 {
	t.Helper()
	pending, err := client.XPending(context.Background(), topic, group).Result()
	require.NoError(t, err)
	return pending.Count
}

func TestStreamsPublishIDsAreTheEntryIDs(t *testing.T) {
	client := pubsubtest.NewClient(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	topic := pubsubtest.Topic(t)

	msgs := []*message.Message{
		message.NewMessage(watermill.NewUUID(), []byte("a")),
		message.NewMessage(watermill.NewUUID(), []byte("b")),
	}
	msgs[1].Metadata.Set("k", "v")
	ids, err := pub.PublishIDs(t.Context(), topic, msgs...)
	require.NoError(t, err)

	entries, err := client.XRange(t.Context(), topic, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 2)
	for i, e := range entries {
		assert.Equal(t, ids[i], e.ID)
		assert.Equal(t, msgs[i].UUID, e.Values[redisbus.StreamsFieldUUID])
		assert.Equal(t, string(msgs[i].Payload), e.Values[redisbus.StreamsFieldPayload])
	}
	// watermill-redisstream's layout: metadata as a MessagePack map.
	assert.Equal(t, "\x81\xa1k\xa1v", entries[1].Values[redisbus.StreamsFieldMetadata])
}

func TestStreamsConcurrentPublishesShareRoundTrips(t *testing.T) {
	client := pubsubtest.NewClient(t)
	counter := &pipelineCounter{command: "xadd"}
	client.AddHook(counter)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	topic := pubsubtest.Topic(t)

	const goroutines, each = 64, 50
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				assert.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))))
			}
		})
	}
	wg.Wait()

	assert.Equal(t, int64(goroutines*each), counter.commands.Load())
	assert.Less(t, counter.roundTrips.Load(), int64(goroutines*each/4),
		"concurrent one-message publishes should be coalesced into shared pipelines")
	n, err := client.XLen(t.Context(), topic).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(goroutines*each), n)
}

func TestStreamsTrimming(t *testing.T) {
	client := pubsubtest.NewClient(t)
	byLength, byAge, unbounded := pubsubtest.Topic(t), pubsubtest.Topic(t), pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{
		Client: client,
		TopicTrim: map[string]redisbus.StreamTrim{
			byLength:  {MaxLen: 100},
			byAge:     {MaxAge: time.Hour},
			unbounded: {Unbounded: true},
		},
	})

	for range 10 {
		msgs := make([]*message.Message, 100)
		for i := range msgs {
			msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("x"))
		}
		require.NoError(t, pub.Publish(byLength, msgs...))
		require.NoError(t, pub.Publish(unbounded, msgs...))
	}
	length, err := client.XLen(t.Context(), byLength).Result()
	require.NoError(t, err)
	assert.Less(t, length, int64(300), "MAXLEN ~ 100 trims whole nodes of 100 entries")
	assert.GreaterOrEqual(t, length, int64(100))
	length, err = client.XLen(t.Context(), unbounded).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1000), length)

	// Entries from 1970 are older than an hour: the next publish trims
	// them (whole nodes of 100 at a time).
	for i := 1; i <= 300; i++ {
		require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: byAge, ID: fmt.Sprintf("%d-0", i), Values: []string{"payload", "old"}}).Err())
	}
	require.NoError(t, pub.Publish(byAge, message.NewMessage(watermill.NewUUID(), []byte("new"))))
	length, err = client.XLen(t.Context(), byAge).Result()
	require.NoError(t, err)
	assert.Less(t, length, int64(301))
}

func TestStreamsPlainEntriesFromOtherProducers(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	// A PHP service: XADD orders * payload '{"id":42}' source php
	require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: topic, Values: []string{"payload", `{"id":42}`, "source", "php"}}).Err())
	// watermill-redisstream: UUID, MessagePack metadata, payload.
	require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: topic, Values: []string{
		"_watermill_message_uuid", "uuid-from-redisstream", "metadata", "\x82\xa1a\xa11\xa1b\xd9\x01" + "2", "payload", "legacy",
	}}).Err())

	php := next(t, ch)
	assert.Equal(t, `{"id":42}`, string(php.Payload))
	assert.Equal(t, "php", php.Metadata.Get("source"))
	assert.NotEmpty(t, php.UUID)
	assert.Equal(t, "1", php.Metadata.Get(redisbus.MetadataDeliveryCount))
	php.Ack()

	legacy := next(t, ch)
	assert.Equal(t, "uuid-from-redisstream", legacy.UUID)
	assert.Equal(t, "legacy", string(legacy.Payload))
	assert.Equal(t, "1", legacy.Metadata.Get("a"))
	assert.Equal(t, "2", legacy.Metadata.Get("b"))
	legacy.Ack()
}

func TestStreamsPoisonMessageIsDeadLetteredAfterMaxDeliveries(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	logger := pubsubtest.NewRecordingLogger()
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: group, MaxDeliveries: 3, NackResendDelay: time.Millisecond,
	}, logger)
	require.NoError(t, err)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	ids, err := pub.PublishIDs(t.Context(), topic,
		message.NewMessage("ok-1", []byte("ok")),
		message.NewMessage("poison", []byte("boom")),
		message.NewMessage("ok-2", []byte("ok")))
	require.NoError(t, err)

	var poisonDeliveries []string
	for done := false; !done; {
		msg := next(t, ch)
		switch msg.UUID {
		case "poison":
			poisonDeliveries = append(poisonDeliveries, msg.Metadata.Get(redisbus.MetadataDeliveryCount))
			msg.Nack()
		case "ok-2":
			done = true
			fallthrough
		default:
			msg.Ack()
		}
	}
	assert.Equal(t, []string{"1", "2", "3"}, poisonDeliveries, "delivered MaxDeliveries times, counted in metadata")
	require.NoError(t, sub.Close()) // flushes acks and dead letters

	dead, err := client.XRange(t.Context(), topic+":dead", "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, dead, 1)
	fields := dead[0].Values
	assert.Equal(t, "poison", fields[redisbus.StreamsFieldUUID])
	assert.Equal(t, "boom", fields[redisbus.StreamsFieldPayload])
	assert.Equal(t, topic, fields[redisbus.DeadLetterFieldStream])
	assert.Equal(t, ids[1], fields[redisbus.DeadLetterFieldID])
	assert.Equal(t, group, fields[redisbus.DeadLetterFieldGroup])
	assert.Equal(t, "3", fields[redisbus.DeadLetterFieldDeliveries])
	assert.Contains(t, fields[redisbus.DeadLetterFieldReason], "nacked 3 times")
	assert.Zero(t, pendingCount(t, client, topic, group), "the poison entry left the group")

	// The log says why, as its error: not err=<nil>.
	logged := logger.Find(watermill.ErrorLogLevel, "dead-letter")
	require.Len(t, logged, 1)
	require.Error(t, logged[0].Err)
	assert.Equal(t, fields[redisbus.DeadLetterFieldReason], logged[0].Err.Error())
	assert.Equal(t, ids[1], logged[0].Fields["entry_id"])
}

func TestStreamsUndecodableEntryIsDeadLetteredAtOnce(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	logger := pubsubtest.NewRecordingLogger()
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, logger)
	require.NoError(t, err)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	for _, values := range [][]string{
		{"no", "payload"},
		{"payload", "x", "metadata", "not msgpack"},
		{"payload", "fine"},
	} {
		require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: topic, Values: values}).Err())
	}
	msg := next(t, ch)
	assert.Equal(t, "fine", string(msg.Payload), "the subscription goes on past bad entries")
	msg.Ack()
	require.NoError(t, sub.Close())

	dead, err := client.XRange(t.Context(), topic+":dead", "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, dead, 2)
	assert.Contains(t, dead[0].Values[redisbus.DeadLetterFieldReason], `no "payload" field`)
	assert.Equal(t, "0", dead[0].Values[redisbus.DeadLetterFieldDeliveries], "no handler ever had it")
	assert.Contains(t, dead[1].Values[redisbus.DeadLetterFieldReason], "MessagePack")
	assert.Equal(t, "not msgpack", dead[1].Values[redisbus.StreamsFieldMetadata], "the entry's own fields are kept")
	assert.Zero(t, pendingCount(t, client, topic, group))
	assert.Equal(t, uint64(2), sub.Stats().DeadLettered)
	logged := logger.Find(watermill.ErrorLogLevel, "dead-letter")
	require.Len(t, logged, 2)
	for i, entry := range logged {
		require.Error(t, entry.Err, "the log says why, as its error")
		assert.Equal(t, dead[i].Values[redisbus.DeadLetterFieldReason], entry.Err.Error())
	}
}

func TestStreamsRestartedConsumerResumesItsPendingEntriesAtOnce(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	// Close gives up on the message it handed out at once, as if crashed.
	config := redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, Consumer: "worker-1", CloseTimeout: -1}

	first, err := redisbus.NewStreamsSubscriber(config, nil)
	require.NoError(t, err)
	ch, err := first.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "a", "b", "c")
	held := next(t, ch) // handed out, never acked
	require.Equal(t, "a", string(held.Payload))
	require.NoError(t, first.Close())

	// The default ClaimMinIdle is 30s: only resuming its own pending list
	// can bring these back now.
	second := newStreamsSubscriber(t, config, nil)
	ch, err = second.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	a := next(t, ch)
	assert.Equal(t, "a", string(a.Payload))
	assert.Equal(t, "2", a.Metadata.Get(redisbus.MetadataDeliveryCount))
	a.Ack()
	assert.Equal(t, []string{"b", "c"}, receive(t, ch, 2))
}

func TestStreamsLongHandlerKeepsItsEntry(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	config := redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, ClaimMinIdle: 200 * time.Millisecond}

	slowConfig := config
	slowConfig.Consumer = "slow"
	slow := newStreamsSubscriber(t, slowConfig, nil)
	slowCh, err := slow.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "long job")
	job := next(t, slowCh)

	otherConfig := config
	otherConfig.Consumer = "other"
	other := newStreamsSubscriber(t, otherConfig, nil)
	_, err = other.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	time.Sleep(7 * config.ClaimMinIdle) // the handler runs far longer than ClaimMinIdle
	job.Ack()
	require.NoError(t, slow.Close())
	assert.Zero(t, pendingCount(t, client, topic, group))
	assert.Zero(t, other.Stats().Claimed, "a live consumer's entry must not be claimed")
	assert.Zero(t, slow.Stats().Lost)
}

func TestStreamsGroupDeletedUnderARunningSubscriberIsRecreated(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	logger := pubsubtest.NewRecordingLogger()
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, BlockTime: 50 * time.Millisecond}, logger)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "before")
	assert.Equal(t, []string{"before"}, receive(t, ch, 1))

	require.NoError(t, client.Del(t.Context(), topic).Err())
	publish(t, pub, topic, "after") // recreates the stream, without the group
	assert.Equal(t, []string{"after"}, receive(t, ch, 1))
	assert.NotEmpty(t, logger.Find(watermill.ErrorLogLevel, "recreating the group"))
}

func TestStreamsFanOutGivesEverySubscriberEveryEntry(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	publish(t, pub, topic, "old")

	fromNow := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client}, nil)
	fromStart := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, StartID: "0"}, nil)
	nowCh, err := fromNow.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	startCh, err := fromStart.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	publish(t, pub, topic, "new-1", "new-2")
	assert.Equal(t, []string{"new-1", "new-2"}, receive(t, nowCh, 2), "fan-out starts at new entries by default")
	assert.Equal(t, []string{"old", "new-1", "new-2"}, receive(t, startCh, 3))
}

func TestStreamsMaxInFlightHandsOutSeveralMessages(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", MaxInFlight: 5}, nil)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	var payloads []string
	for i := range 8 {
		payloads = append(payloads, strconv.Itoa(i))
	}
	publish(t, pub, topic, payloads...)

	var held []*message.Message
	for range 5 {
		held = append(held, next(t, ch)) // none acked yet
	}
	held[2].Nack() // with order given up, a Nack does not hold the others back
	var rest []string
	for range 4 {
		msg := next(t, ch)
		rest = append(rest, string(msg.Payload))
		msg.Ack()
	}
	assert.ElementsMatch(t, []string{"2", "5", "6", "7"}, rest)
	for _, msg := range held {
		msg.Ack()
	}
}

func TestStreamsIdleConsumersWithNothingPendingAreRemoved(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	require.NoError(t, client.XGroupCreateConsumer(t.Context(), topic, group, "ghost").Err())
	// "busy" holds an entry: removing it would lose that entry.
	require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: topic, Values: []string{"payload", "x"}}).Err())
	require.NoError(t, client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: group, Consumer: "busy", Streams: []string{topic, ">"}, Count: 1}).Err())

	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: group, Consumer: "live",
		ConsumerIdleTimeout: 50 * time.Millisecond, ClaimMinIdle: time.Hour,
	}, nil)
	require.NoError(t, sub.SubscribeInitialize(topic))

	names := func() []string {
		consumers, err := client.XInfoConsumers(t.Context(), topic, group).Result()
		require.NoError(t, err)
		var names []string
		for _, c := range consumers {
			names = append(names, c.Name)
		}
		return names
	}
	require.Eventually(t, func() bool {
		n := names()
		return len(n) == 1 && n[0] == "busy"
	}, waitTimeout, 10*time.Millisecond, "ghost should go, busy and the subscriber's own name stay")
}

func TestStreamsCloseIsPromptAndLeaksNothing(t *testing.T) {
	client := pubsubtest.NewClient(t)
	require.NoError(t, client.Ping(t.Context()).Err())
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	topic := pubsubtest.Topic(t)
	for _, group := range []string{"g", ""} {
		pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
		require.NoError(t, err)
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client: client, ConsumerGroup: group, BlockTime: time.Minute,
			CloseTimeout: 100 * time.Millisecond, // "held" is never acked
		}, nil)
		require.NoError(t, err)
		ch, err := sub.Subscribe(context.Background(), topic)
		require.NoError(t, err)
		publish(t, pub, topic, "held")
		held := next(t, ch)
		idle, err := sub.Subscribe(context.Background(), topic+"-idle") // blocked in XREADGROUP
		require.NoError(t, err)

		start := time.Now()
		require.NoError(t, sub.Close())
		assert.Less(t, time.Since(start), time.Second, "Close must not wait for a blocking read")
		require.NoError(t, sub.Close(), "Close is idempotent")
		require.NoError(t, pub.Close())
		<-held.Context().Done()
		for range ch {
		}
		for range idle {
		}
		_, err = sub.Subscribe(context.Background(), topic)
		assert.ErrorIs(t, err, redisbus.ErrSubscriberClosed)
		assert.ErrorIs(t, pub.Publish(topic, message.NewMessage("x", nil)), redisbus.ErrPublisherClosed)
	}
	assert.NoError(t, client.Ping(t.Context()).Err(), "the caller's client stays open")
}

func TestStreamsConsumerNames(t *testing.T) {
	client := pubsubtest.NewClient(t)
	host, err := os.Hostname()
	require.NoError(t, err)
	group := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})

	consumerOf := func(sub *redisbus.StreamsSubscriber, topic string) string {
		t.Helper()
		ch, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		publish(t, pub, topic, "x")
		msg := next(t, ch)
		msg.Ack()
		consumers, err := client.XInfoConsumers(t.Context(), topic, group).Result()
		require.NoError(t, err)
		for _, c := range consumers {
			if c.Pending > 0 || c.Idle < time.Second {
				return c.Name
			}
		}
		return ""
	}

	// Names are unique per stream and group: on the same stream the second
	// subscriber gets "-2", on another stream the host name again.
	shared := pubsubtest.Topic(t)
	first := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
	second := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
	require.NoError(t, first.SubscribeInitialize(shared))
	require.NoError(t, second.SubscribeInitialize(shared))
	names, err := client.XInfoConsumers(t.Context(), shared, group).Result()
	require.NoError(t, err)
	assert.Empty(t, names, "no consumer exists before the first read")
	other := pubsubtest.Topic(t)
	assert.Equal(t, host, consumerOf(second, other), "another stream: the host name is free there")

	// An explicit name in use on the same stream and group is refused at
	// Subscribe, with the field named; on other streams it is fine (one
	// name for every handler of a CQRS service).
	worker := redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, Consumer: "worker-1"}
	a := newStreamsSubscriber(t, worker, nil)
	b := newStreamsSubscriber(t, worker, nil)
	require.NoError(t, a.SubscribeInitialize(shared))
	err = b.SubscribeInitialize(shared)
	var configErr *redisbus.ConfigError
	require.True(t, errors.As(err, &configErr), "got %v", err)
	assert.Equal(t, "StreamsSubscriberConfig.Consumer", configErr.Field)
	require.NoError(t, b.SubscribeInitialize(other), "the same name on another stream")
}

func TestStreamsConfigErrorsNameTheField(t *testing.T) {
	client := pubsubtest.NewClient(t)
	for field, build := range map[string]func() error{
		"StreamsPublisherConfig.Client": func() error {
			_, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{}, nil)
			return err
		},
		`StreamsPublisherConfig.TopicTrim["t"].MaxLen`: func() error {
			_, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client, TopicTrim: map[string]redisbus.StreamTrim{"t": {MaxLen: -1}}}, nil)
			return err
		},
		"StreamsSubscriberConfig.Client": func() error {
			_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{}, nil)
			return err
		},
		"StreamsSubscriberConfig.ReadBatchSize": func() error {
			_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, Prefetch: 10, ReadBatchSize: 20}, nil)
			return err
		},
		"StreamsSubscriberConfig.ClaimMinIdle": func() error {
			_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ClaimMinIdle: time.Millisecond}, nil)
			return err
		},
		"StreamsSubscriberConfig.StartID": func() error {
			_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", StartID: ">"}, nil)
			return err
		},
		"StreamsSubscriberConfig.BlockTime": func() error {
			_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, BlockTime: time.Microsecond}, nil)
			return err
		},
		"StreamsSubscriberConfig.NackMaxDelay": func() error {
			_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, NackResendDelay: time.Second, NackMaxDelay: time.Millisecond}, nil)
			return err
		},
		"StreamsSubscriberConfig.ConsumerLease": func() error {
			_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ConsumerLease: time.Millisecond}, nil)
			return err
		},
		"StreamsSubscriberConfig.DeadLetterTopic": func() error {
			// Known at Subscribe: the topic itself, or no stream at all.
			var err error
			for _, dead := range []func(string) string{func(topic string) string { return topic }, func(string) string { return "" }} {
				sub, newErr := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", DeadLetterTopic: dead}, nil)
				require.NoError(t, newErr)
				defer sub.Close()
				_, err = sub.Subscribe(t.Context(), pubsubtest.Topic(t))
				var configErr *redisbus.ConfigError
				require.ErrorAs(t, err, &configErr)
			}
			return err
		},
		"StreamsPublisherConfig.Trim.Unbounded": func() error {
			_, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client, Trim: redisbus.StreamTrim{MaxLen: 10, Unbounded: true}}, nil)
			return err
		},
	} {
		var configErr *redisbus.ConfigError
		err := build()
		require.True(t, errors.As(err, &configErr), "%s: got %v", field, err)
		assert.Equal(t, field, configErr.Field)
	}
}

func TestStreamsAckRightBeforeCloseIsSent(t *testing.T) {
	client := pubsubtest.NewClient(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	for range 20 {
		topic, group := pubsubtest.Topic(t), "g"
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
		require.NoError(t, err)
		ch, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		publish(t, pub, topic, "x")
		next(t, ch).Ack()
		require.NoError(t, sub.Close()) // may run before the dispatcher saw the Ack
		assert.Zero(t, pendingCount(t, client, topic, group))
	}
}

func TestStreamsMaxInFlightUnderARouter(t *testing.T) {
	// A Router replaces the context of every message it receives; with
	// several messages in flight, the subscriber must not look at that
	// field again (a data race the race detector catches).
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", MaxInFlight: 16}, nil)
	const count = 500
	var payloads []string
	for i := range count {
		payloads = append(payloads, strconv.Itoa(i))
	}
	publish(t, pub, topic, payloads...)

	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	router.AddConsumerHandler("h", topic, sub, func(msg *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen[string(msg.Payload)] = true
		if len(seen) == count {
			close(done)
		}
		return nil
	})
	go func() { _ = router.Run(context.Background()) }()
	defer router.Close()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("not every message arrived")
	}
}
