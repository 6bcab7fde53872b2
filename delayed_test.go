package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/components/requeuer"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// delayedMessage is a message Watermill's delay package delays until due.
func delayedMessage(payload string, due time.Time) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
	msg.Metadata.Set(delay.DelayedUntilKey, due.UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(delay.DelayedForKey, time.Until(due).String())
	return msg
}

// delayedTopic returns a client, a topic, a Streams publisher and a
// subscriber of group "g" with its messages of the topic.
func delayedTopic(t *testing.T) (redis.UniversalClient, string, *redisbus.StreamsPublisher, *redisbus.StreamsSubscriber, <-chan *message.Message) {
	t.Helper()
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g"}, nil)
	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	return client, topic, pub, sub, messages
}

// redisNow is Redis' clock, by which messages fall due.
func redisNow(t *testing.T) time.Time {
	t.Helper()
	now, err := pubsubtest.NewClient(t).Time(t.Context()).Result()
	require.NoError(t, err)
	return now
}

// A delayed message is stored at once (Publish returns once it is) and
// enters its stream no earlier than its due time, while messages without
// a delay go straight in.
func TestDelayedMessageEntersItsStreamWhenDue(t *testing.T) {
	_, topic, pub, sub, messages := delayedTopic(t)

	due := redisNow(t).Add(300 * time.Millisecond)
	ids, err := pub.PublishIDs(t.Context(), topic, delayedMessage("later", due), message.NewMessage(watermill.NewUUID(), []byte("now")))
	require.NoError(t, err)
	assert.Empty(t, ids[0], "a delayed message has no entry yet")
	assert.NotEmpty(t, ids[1])
	assert.EqualValues(t, 1, pub.Stats().Scheduled)
	count, first, err := sub.Scheduled(t.Context(), topic)
	require.NoError(t, err)
	assert.EqualValues(t, 1, count)
	assert.WithinDuration(t, due, first, time.Millisecond)

	assert.Equal(t, []string{"now"}, receive(t, messages, 1))
	later := next(t, messages)
	arrived := redisNow(t)
	later.Ack()
	assert.Equal(t, "later", string(later.Payload))
	assert.False(t, arrived.Before(due), "arrived %s before its due time", due.Sub(arrived))
	assert.Less(t, arrived.Sub(due), 500*time.Millisecond, "arrived long after its due time")
	require.Eventually(t, func() bool { return sub.Stats().DelayedMoved == 1 }, waitTimeout, time.Millisecond,
		"counted once the move's reply is in")
	count, _, err = sub.Scheduled(t.Context(), topic)
	require.NoError(t, err)
	assert.Zero(t, count)
}

// Delayed messages enter their stream in due-time order, whatever order
// they were published in, and messages due at once in publish order; a
// due time already past means at once.
func TestDelayedMessagesArriveInDueOrder(t *testing.T) {
	_, topic, pub, _, messages := delayedTopic(t)

	start := redisNow(t).Add(200 * time.Millisecond)
	var want []string
	for i := range 20 {
		due := start.Add(time.Duration(20-i) * 10 * time.Millisecond)
		require.NoError(t, pub.Publish(topic, delayedMessage(fmt.Sprint("reverse ", i), due)))
	}
	for i := range 20 {
		want = append(want, fmt.Sprint("reverse ", 19-i))
	}
	tie := start.Add(300 * time.Millisecond)
	for i := range 5 {
		require.NoError(t, pub.Publish(topic, delayedMessage(fmt.Sprint("tie ", i), tie)))
		want = append(want, fmt.Sprint("tie ", i))
	}
	require.NoError(t, pub.Publish(topic, delayedMessage("past", time.Now().Add(-time.Hour))))
	assert.EqualValues(t, 25, pub.Stats().Scheduled, "a due time past is not scheduled")
	assert.Equal(t, "past", receive(t, messages, 1)[0])
	assert.Equal(t, want, receive(t, messages, len(want)))
}

// A handler that fails is retried after the delay DelayOnError sets,
// without holding a handler or a pending entry meanwhile; the deliveries
// before count towards MaxDeliveries.
func TestNackWithADelayComesBackLater(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", MaxDeliveries: 3}, nil)

	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	type attempt struct {
		at    time.Time
		count string
	}
	attempts := make(chan attempt, 10)
	delayOnError := middleware.DelayOnError{InitialInterval: 400 * time.Millisecond, MaxInterval: time.Second, Multiplier: 1}
	router.AddConsumerHandler("flaky", topic, sub, func(msg *message.Message) error {
		attempts <- attempt{at: redisNow(t), count: msg.Metadata.Get(redisbus.MetadataDeliveryCount)}
		return errors.New("not yet")
	})
	router.AddMiddleware(delayOnError.Middleware)
	startRouter(t, router)

	publish(t, pub, topic, "flaky")
	first := nextAttempt(t, attempts)
	assert.Equal(t, "1", first.count)
	// While it waits, nothing is pending: the entry was acked, a copy
	// scheduled.
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, "g") == 0 }, waitTimeout, 5*time.Millisecond)
	count, _, err := sub.Scheduled(t.Context(), topic)
	require.NoError(t, err)
	assert.EqualValues(t, 1, count)

	second := nextAttempt(t, attempts)
	assert.GreaterOrEqual(t, second.at.Sub(first.at), 350*time.Millisecond, "came back before its delay (RFC 3339 keeps it to the second only if Watermill's delay writes it so)")
	assert.Equal(t, "2", second.count, "the deliveries before count")
	third := nextAttempt(t, attempts)
	assert.Equal(t, "3", third.count)
	// The third failure reaches MaxDeliveries: a dead letter, not another
	// delay.
	require.Eventually(t, func() bool {
		dead, err := client.XLen(t.Context(), topic+":dead").Result()
		return err == nil && dead == 1
	}, waitTimeout, 10*time.Millisecond)
	assert.EqualValues(t, 2, sub.Stats().Rescheduled)
	select {
	case a := <-attempts:
		t.Fatalf("delivered again after MaxDeliveries: %+v", a)
	case <-time.After(600 * time.Millisecond):
	}
}

func nextAttempt[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatal("no attempt")
	}
	var zero T
	return zero
}

func startRouter(t *testing.T, router *message.Router) {
	t.Helper()
	go func() { _ = router.Run(context.Background()) }()
	t.Cleanup(func() { _ = router.Close() })
	select {
	case <-router.Running():
	case <-time.After(waitTimeout):
		t.Fatal("the router did not start")
	}
}

// Watermill's requeuer, as its documentation shows it: a failing handler's
// message goes to a poison queue with a delay (DelayOnError), the requeuer
// publishes it back to its topic, and the Streams publisher holds it until
// the delay has passed.
func TestRequeuerWithDelayOnError(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	poisonTopic := topic + ".poison"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g"}, nil)
	poisonSub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "requeuer"}, nil)

	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	poisonQueue, err := middleware.PoisonQueue(pub, poisonTopic)
	require.NoError(t, err)
	router.AddMiddleware(poisonQueue, (&middleware.DelayOnError{InitialInterval: 300 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2}).Middleware)
	type attempt struct {
		at      time.Time
		retries string
	}
	attempts := make(chan attempt, 10)
	router.AddConsumerHandler("flaky", topic, sub, func(msg *message.Message) error {
		attempts <- attempt{at: redisNow(t), retries: msg.Metadata.Get(requeuer.RetriesKey)}
		if msg.Metadata.Get(requeuer.RetriesKey) == "2" {
			return nil
		}
		return errors.New("not yet")
	})
	_, err = requeuer.NewRequeuer(requeuer.Config{
		Subscriber:     poisonSub,
		SubscribeTopic: poisonTopic,
		Publisher:      pub,
		Router:         router,
		GeneratePublishTopic: func(p requeuer.GeneratePublishTopicParams) (string, error) {
			return p.Message.Metadata.Get(middleware.PoisonedTopicKey), nil
		},
	}, nil)
	require.NoError(t, err)
	startRouter(t, router)

	publish(t, pub, topic, "flaky")
	first := nextAttempt(t, attempts)
	second := nextAttempt(t, attempts)
	third := nextAttempt(t, attempts)
	assert.Equal(t, []string{"", "1", "2"}, []string{first.retries, second.retries, third.retries})
	assert.GreaterOrEqual(t, second.at.Sub(first.at), 250*time.Millisecond, "the requeued message waited for its delay")
	assert.GreaterOrEqual(t, third.at.Sub(second.at), 500*time.Millisecond, "the delay grew")
	assert.Positive(t, pub.Stats().Scheduled)
}

// A delay Watermill's metadata cannot hold is refused, naming the key.
func TestDelayedMessageWithABadDueTime(t *testing.T) {
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{})
	msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
	msg.Metadata.Set(delay.DelayedUntilKey, "tomorrow")
	err := pub.Publish(pubsubtest.Topic(t), msg)
	assert.ErrorContains(t, err, delay.DelayedUntilKey)
	assert.ErrorContains(t, err, `"tomorrow"`)
}

// Invalid mover settings are refused, naming the field.
func TestDelayedMoverConfigIsValidated(t *testing.T) {
	client := pubsubtest.NewClient(t)
	for field, config := range map[string]redisbus.StreamsSubscriberConfig{
		"DelayedMoveBatch":    {DelayedMoveBatch: -1},
		"DelayedPollInterval": {DelayedPollInterval: time.Microsecond},
	} {
		config.Client = client
		_, err := redisbus.NewStreamsSubscriber(config, nil)
		assert.ErrorContains(t, err, "StreamsSubscriberConfig."+field)
	}
	_, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{Client: client, DelayedMoveBatch: 5000}, nil)
	assert.ErrorContains(t, err, "DelayedMoveBatch")
}

// 10,000 messages due within one second, moved by three worker processes
// at once, one of them SIGKILLed while they move: each message enters the
// stream exactly once, none before its due time, and every one is handled.
func TestDelayedMessagesMovedOnceByManyProcesses(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	env := map[string]string{"W_TOPIC": topic, "W_GROUP": "g", "W_CLAIM_MIN_IDLE": "500ms", "W_MAX_IN_FLIGHT": "64"}
	var workers []*workerProcess
	for i := range 3 {
		env["W_CONSUMER"] = fmt.Sprint("worker-", i)
		workers = append(workers, startWorker(t, env))
	}
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	const n = 10_000
	start := redisNow(t).Add(time.Second)
	msgs := make([]*message.Message, n)
	due := map[string]time.Time{}
	for i := range msgs {
		at := start.Add(time.Duration(i) * time.Second / n)
		msgs[i] = delayedMessage(fmt.Sprint("d", i), at)
		due[fmt.Sprint("d", i)] = at
	}
	require.NoError(t, pub.Publish(topic, msgs...))

	// Kill one mover once moving has begun.
	require.Eventually(t, func() bool {
		length, err := client.XLen(t.Context(), topic).Result()
		return err == nil && length > 0
	}, 2*waitTimeout, time.Millisecond)
	require.NoError(t, workers[0].cmd.Process.Kill())

	handled := func() map[string]bool {
		seen := map[string]bool{}
		for _, w := range workers {
			for _, p := range w.handledPayloads() {
				seen[p] = true
			}
		}
		return seen
	}
	require.Eventually(t, func() bool { return len(handled()) == n }, 3*waitTimeout, 20*time.Millisecond,
		"handled %d of %d", len(handled()), n)

	entries, err := client.XRange(t.Context(), topic, "-", "+").Result()
	require.NoError(t, err)
	assert.Len(t, entries, n, "each message enters the stream exactly once")
	left, err := client.ZCard(t.Context(), "{"+topic+"}:redisbus:delayed:"+topic).Result()
	require.NoError(t, err)
	assert.Zero(t, left)
	var lateness []time.Duration
	for _, e := range entries {
		payload, _ := e.Values[redisbus.StreamsFieldPayload].(string)
		ms, _, _ := strings.Cut(e.ID, "-")
		movedAt, err := strconv.ParseInt(ms, 10, 64)
		require.NoError(t, err)
		late := time.UnixMilli(movedAt).Sub(due[payload])
		// The entry ID holds the millisecond it was moved in (Redis'
		// clock), the due time rounded up at the latest.
		require.GreaterOrEqual(t, late, time.Duration(0), "%s entered its stream %s before its due time", payload, -late)
		lateness = append(lateness, late)
	}
	slices.Sort(lateness)
	t.Logf("lateness of %d messages moved by 3 processes (one killed): p50 %s, p99 %s, max %s",
		n, lateness[n/2], lateness[n*99/100], lateness[n-1])
}

// On Redis Cluster a topic's delayed set and wake channel live in its
// stream's slot: publishing, moving, waking and rescheduling work across
// masters, for topics with and without hash tags.
func TestDelayedMessagesOnACluster(t *testing.T) {
	cluster := pubsubtest.StartCluster(t, 3)
	client := cluster.Client(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", DelayedPollInterval: time.Hour}, nil)
	for _, topic := range []string{"plain-" + watermill.NewShortUUID(), "{tagged}:" + watermill.NewShortUUID(), "a}b-" + watermill.NewShortUUID()} {
		messages, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		now, err := client.Time(t.Context()).Result()
		require.NoError(t, err)
		// The mover polls once an hour here: a message scheduled before
		// its wake subscription is found by the move it makes once
		// subscribed, one scheduled after by a wake.
		// PublishOnce's marks share the slot too.
		once := delayedMessage("later "+topic, now.Add(200*time.Millisecond))
		results, err := pub.PublishOnce(topic, time.Minute, once, once.Copy())
		require.NoError(t, err)
		assert.Equal(t, []redisbus.PublishedOnce{{}, {Duplicate: true}}, results)
		msg := next(t, messages)
		arrived, err := client.Time(t.Context()).Result()
		require.NoError(t, err)
		msg.Ack()
		assert.Equal(t, "later "+topic, string(msg.Payload))
		assert.False(t, arrived.Before(now.Add(200*time.Millisecond)))
	}
}

// got is a delivery of a message to a consumer group, and its count.
type got struct{ group, count string }

// billingAndEmail returns a Router, not started, with two consumer groups
// of topic: billing (maxDeliveries), whose handler fails a delivery when
// fails says so (after setting what delay it likes), and email, which
// succeeds; each reports its deliveries on the channel returned.
func billingAndEmail(t *testing.T, client redis.UniversalClient, topic string, maxDeliveries int, fails func(*message.Message) bool) (*message.Router, chan got, *redisbus.StreamsSubscriber) {
	t.Helper()
	billing := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "billing", MaxDeliveries: maxDeliveries}, nil)
	email := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "email"}, nil)
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	deliveries := make(chan got, 10)
	router.AddConsumerHandler("billing", topic, billing, func(msg *message.Message) error {
		deliveries <- got{"billing", msg.Metadata.Get(redisbus.MetadataDeliveryCount)}
		if fails(msg) {
			return errors.New("card declined")
		}
		return nil
	})
	router.AddConsumerHandler("email", topic, email, func(msg *message.Message) error {
		deliveries <- got{"email", msg.Metadata.Get(redisbus.MetadataDeliveryCount)}
		return nil
	})
	return router, deliveries, billing
}

// A Nack with a delay in one consumer group brings the message back to
// that group only: the copy enters the stream every group reads, and the
// others (and fan-out readers) skip it, having had the message already.
func TestNackWithADelayComesBackToItsGroupOnly(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	router, deliveries, _ := billingAndEmail(t, client, topic, 0, func(msg *message.Message) bool {
		if msg.Metadata.Get(redisbus.MetadataDeliveryCount) != "1" {
			return false
		}
		delay.Message(msg, delay.For(100*time.Millisecond))
		return true
	})
	tail := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, StartID: "0"}, nil)
	router.AddConsumerHandler("tail", topic, tail, func(msg *message.Message) error {
		deliveries <- got{"tail", ""}
		return nil
	})
	startRouter(t, router)
	publish(t, pub, topic, "order-1")

	seen := map[got]int{}
	for range 4 { // billing twice, email once, tail once
		seen[nextAttempt(t, deliveries)]++
	}
	assert.Equal(t, map[got]int{{"billing", "1"}: 1, {"billing", "2"}: 1, {"email", "1"}: 1, {"tail", ""}: 1}, seen)
	require.Eventually(t, func() bool {
		length, err := client.XLen(t.Context(), topic).Result()
		return err == nil && length == 2 // the message and billing's copy
	}, waitTimeout, 10*time.Millisecond)
	select {
	case d := <-deliveries:
		t.Fatalf("delivered again: %+v", d)
	case <-time.After(300 * time.Millisecond):
	}
}

// A dead letter of a rescheduled copy is the message's, not the copy's:
// replayed as the console does (its fields without the dead-letter ones),
// every group gets it again, the one that gave up with every delivery
// ahead of it.
func TestDeadLetterOfARescheduledCopyIsANewMessageForEveryGroup(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	router, deliveries, billing := billingAndEmail(t, client, topic, 2, func(msg *message.Message) bool {
		delay.Message(msg, delay.For(50*time.Millisecond))
		return true
	})
	startRouter(t, router)
	publish(t, pub, topic, "order-1")

	seen := map[got]int{}
	for range 3 { // billing: the message, its copy (then a dead letter); email: the message
		seen[nextAttempt(t, deliveries)]++
	}
	assert.Equal(t, map[got]int{{"billing", "1"}: 1, {"billing", "2"}: 1, {"email", "1"}: 1}, seen)
	dead := billing.DeadLetterTopic(topic)
	var letter redis.XMessage
	require.Eventually(t, func() bool {
		letters, err := client.XRange(t.Context(), dead, "-", "+").Result()
		if err != nil || len(letters) == 0 {
			return false
		}
		letter = letters[0]
		return true
	}, waitTimeout, 10*time.Millisecond)
	assert.Equal(t, "2", letter.Values[redisbus.DeadLetterFieldDeliveries])
	assert.NotContains(t, letter.Values, "redisbus_for_group", "a dead letter is for whoever reads it")
	assert.NotContains(t, letter.Values, "redisbus_prior_deliveries")

	// Replayed: the console re-adds its fields without the dead-letter ones.
	var fields []any
	for k, v := range letter.Values {
		switch k {
		case redisbus.DeadLetterFieldReason, redisbus.DeadLetterFieldStream, redisbus.DeadLetterFieldID,
			redisbus.DeadLetterFieldGroup, redisbus.DeadLetterFieldConsumer, redisbus.DeadLetterFieldDeliveries:
			continue
		}
		fields = append(fields, k, v)
	}
	require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: topic, Values: fields}).Err())
	seen = map[got]int{}
	for range 3 {
		seen[nextAttempt(t, deliveries)]++
	}
	assert.Equal(t, map[got]int{{"billing", "1"}: 1, {"billing", "2"}: 1, {"email", "1"}: 1}, seen, "as new, for both groups")
}

// Metadata named like a rescheduled copy's fields is the application's: a
// producer that sets it neither hides its message from a group nor
// changes its delivery count, and the handlers see it.
func TestMetadataNamedLikeACopysFieldsIsTheApplications(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	msg := message.NewMessage(watermill.NewUUID(), []byte("order-1"))
	msg.Metadata.Set("redisbus_for_group", "email")
	msg.Metadata.Set("redisbus_prior_deliveries", "5")
	require.NoError(t, pub.Publish(topic, msg))
	for _, group := range []string{"billing", "email", ""} {
		sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, StartID: "0"}, nil)
		messages, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		got := next(t, messages)
		assert.Equal(t, "email", got.Metadata.Get("redisbus_for_group"), "group %q", group)
		assert.Equal(t, "5", got.Metadata.Get("redisbus_prior_deliveries"), "group %q", group)
		if group != "" {
			assert.Equal(t, "1", got.Metadata.Get(redisbus.MetadataDeliveryCount), "group %q", group)
		}
		got.Ack()
	}
}

// A plain Nack of a message that arrived delayed brings it back with the
// usual backoff: the delay it arrived with is behind it, whatever part of
// a second its due time fell in (Watermill writes the until to the
// second, and for beside it).
func TestPlainNackOfADelayedMessageIsNotDelayedAgain(t *testing.T) {
	client, topic, pub, sub, messages := delayedTopic(t)
	for _, d := range []time.Duration{1200 * time.Millisecond, 1700 * time.Millisecond} {
		msg := message.NewMessage(watermill.NewUUID(), []byte(d.String()))
		delay.Message(msg, delay.For(d))
		require.NoError(t, pub.Publish(topic, msg))
	}
	for range 2 {
		first := next(t, messages)
		first.Nack()
		again := next(t, messages)
		assert.Equal(t, first.UUID, again.UUID)
		assert.Equal(t, "2", again.Metadata.Get(redisbus.MetadataDeliveryCount))
		again.Ack()
	}
	assert.Zero(t, sub.Stats().Rescheduled)
	assert.EqualValues(t, 2, client.XLen(t.Context(), topic).Val(), "no copy was stored")
}

// A due time far ahead (a "never" of year 9999) waits, in its place.
func TestDelayedMessageFarAhead(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g"}, nil)
	for _, year := range []int{2263, 9999, 2500} {
		require.NoError(t, pub.Publish(topic, delayedMessage(fmt.Sprint(year), time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC))))
	}
	count, first, err := sub.Scheduled(t.Context(), topic)
	require.NoError(t, err)
	assert.EqualValues(t, 3, count)
	assert.Equal(t, 2263, first.Year())
	scores, err := client.ZRangeWithScores(t.Context(), redisbus.DelayedKey(topic), 0, -1).Result()
	require.NoError(t, err)
	var years []int
	for _, z := range scores {
		years = append(years, time.UnixMilli(int64(z.Score)).UTC().Year())
	}
	assert.Equal(t, []int{2263, 2500, 9999}, years)
}
