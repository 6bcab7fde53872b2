package redisbus_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// PublishOnce stores a UUID once per topic within the window, whether the
// repeat comes in a later call or in the same one, and tells where the
// first copy went.
func TestStreamsPublishOnceStoresAMessageOnce(t *testing.T) {
	client := pubsubtest.NewClient(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	topic, other := pubsubtest.Topic(t), pubsubtest.Topic(t)
	msg := message.NewMessage(watermill.NewUUID(), []byte("order 1"))
	const window = time.Minute

	first, err := pub.PublishOnce(topic, window, msg)
	require.NoError(t, err)
	require.Len(t, first, 1)
	assert.False(t, first[0].Duplicate)

	again, err := pub.PublishOnce(topic, window, msg.Copy(), message.NewMessage(watermill.NewUUID(), []byte("order 2")), msg.Copy())
	require.NoError(t, err)
	require.Len(t, again, 3)
	assert.Equal(t, redisbus.PublishedOnce{ID: first[0].ID, Duplicate: true}, again[0], "a later call gets the first entry's ID")
	assert.False(t, again[1].Duplicate)
	assert.Equal(t, redisbus.PublishedOnce{ID: first[0].ID, Duplicate: true}, again[2], "a repeat within the call too")

	entries, err := client.XRange(t.Context(), topic, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 2)
	assert.Equal(t, []string{first[0].ID, again[1].ID}, []string{entries[0].ID, entries[1].ID})
	assert.Equal(t, msg.UUID, entries[0].Values[redisbus.StreamsFieldUUID])

	elsewhere, err := pub.PublishOnce(other, window, msg.Copy())
	require.NoError(t, err)
	assert.False(t, elsewhere[0].Duplicate, "marks are per topic")

	// The mark lives beside the stream, for the window.
	ttl, err := client.PTTL(t.Context(), "{"+topic+"}:redisbus:dedup:"+msg.UUID).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, window-10*time.Second)
	assert.LessOrEqual(t, ttl, window)
}

// PublishOnce of delayed messages: the check and the scheduling are one
// step, and a delayed message and a plain one of the same UUID share the
// mark, in either order, within a call and across calls; a lost reply's
// retry schedules nothing again.
func TestStreamsPublishOnceWithDelayedMessages(t *testing.T) {
	client, slowDown := lateRepliesClient(t)
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()
	topic := pubsubtest.Topic(t)
	const window = time.Minute
	later := func(msg *message.Message) *message.Message {
		c := msg.Copy()
		delay.Message(c, delay.For(time.Hour))
		return c
	}
	plain, delayed := message.NewMessage(watermill.NewUUID(), []byte("a")), message.NewMessage(watermill.NewUUID(), []byte("b"))

	first, err := pub.PublishOnce(topic, window, plain, later(delayed), later(delayed), delayed.Copy(), later(plain))
	require.NoError(t, err)
	require.Len(t, first, 5)
	assert.False(t, first[0].Duplicate)
	assert.NotEmpty(t, first[0].ID)
	assert.Equal(t, redisbus.PublishedOnce{}, first[1], "scheduled: no entry ID yet")
	assert.Equal(t, redisbus.PublishedOnce{Duplicate: true}, first[2], "a repeat within the call")
	assert.Equal(t, redisbus.PublishedOnce{Duplicate: true}, first[3], "the same message without its delay")
	assert.Equal(t, redisbus.PublishedOnce{ID: first[0].ID, Duplicate: true}, first[4], "the first copy in the call wins, delayed or not")

	again, err := pub.PublishOnce(topic, window, later(plain), later(delayed))
	require.NoError(t, err)
	assert.Equal(t, []redisbus.PublishedOnce{{ID: first[0].ID, Duplicate: true}, {Duplicate: true}}, again)

	// A scheduling whose reply was lost, and its retry.
	lost := message.NewMessage(watermill.NewUUID(), []byte("c"))
	slowDown()
	_, err = pub.PublishOnce(topic, window, later(lost))
	require.Error(t, err, "the reply was lost")
	retried, err := pub.PublishOnce(topic, window, later(lost))
	require.NoError(t, err)
	assert.Equal(t, []redisbus.PublishedOnce{{Duplicate: true}}, retried)

	admin := pubsubtest.NewClient(t)
	assert.EqualValues(t, 1, admin.XLen(t.Context(), topic).Val())
	assert.EqualValues(t, 2, admin.ZCard(t.Context(), redisbus.DelayedKey(topic)).Val(), "b and c, once each")
	assert.EqualValues(t, 1, pub.Stats().Scheduled, "b; c's scheduling returned an error, its retry found the mark")
}

// The point of PublishOnce: a retry of a publish whose reply was lost (the
// XADD ran, the caller got an error) does not store the message again, and
// tells the caller the entry it did store.
func TestStreamsPublishOnceRetriedAfterALostReplyStoresOnce(t *testing.T) {
	client, slowDown := lateRepliesClient(t)
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()
	topic := pubsubtest.Topic(t)
	_, err = pub.PublishOnce(topic+"-warm-up", time.Minute, message.NewMessage(watermill.NewUUID(), []byte("opens the connection that turns slow")))
	require.NoError(t, err)
	slowDown()

	msg := message.NewMessage(watermill.NewUUID(), []byte("once"))
	_, err = pub.PublishOnce(topic, time.Minute, msg)
	require.Error(t, err, "the reply was lost: PublishOnce cannot know")

	retried, err := pub.PublishOnce(topic, time.Minute, msg.Copy()) // on a new connection, served at once
	require.NoError(t, err)
	assert.True(t, retried[0].Duplicate, "the first attempt stored it")
	entries, err := pubsubtest.NewClient(t).XRange(t.Context(), topic, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 1)
	assert.Equal(t, entries[0].ID, retried[0].ID)
}

// Publishers in several processes (here, on clients of their own) racing
// to store the same messages store each once.
func TestStreamsPublishOnceFromManyPublishersAtOnce(t *testing.T) {
	topic := pubsubtest.Topic(t)
	msgs := make([]*message.Message, 50)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
	}
	var mu sync.Mutex
	stored := map[string]int{}
	var wg sync.WaitGroup
	for range 6 {
		pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: pubsubtest.NewClient(t)})
		wg.Go(func() {
			for _, msg := range msgs {
				results, err := pub.PublishOnce(topic, time.Minute, msg.Copy())
				if !assert.NoError(t, err) {
					return
				}
				if !results[0].Duplicate {
					mu.Lock()
					stored[msg.UUID]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.Len(t, stored, len(msgs))
	for uuid, n := range stored {
		assert.Equal(t, 1, n, "message %s stored by %d publishers", uuid, n)
	}
	assert.Equal(t, int64(len(msgs)), pubsubtest.NewClient(t).XLen(t.Context(), topic).Val())
}

// A Redis that lost its scripts (a restart, a failover) answers NOSCRIPT,
// having run nothing: PublishOnce loads the script and goes on.
func TestStreamsPublishOnceAfterRedisForgotItsScripts(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	topic := pubsubtest.Topic(t)
	msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
	for range 2 {
		require.NoError(t, client.ScriptFlush(t.Context()).Err())
		later := message.NewMessage(watermill.NewUUID(), []byte("z"))
		delay.Message(later, delay.For(time.Hour))
		results, err := pub.PublishOnce(topic, time.Minute, msg.Copy(), message.NewMessage(watermill.NewUUID(), []byte("y")), later)
		require.NoError(t, err)
		require.Len(t, results, 3)
		assert.False(t, results[1].Duplicate)
		assert.Equal(t, redisbus.PublishedOnce{}, results[2], "scheduled now, by the call Redis answered NOSCRIPT")
	}
	assert.Equal(t, int64(3), client.XLen(t.Context(), topic).Val())
	assert.Equal(t, int64(2), client.ZCard(t.Context(), redisbus.DelayedKey(topic)).Val())
}

// A hostile UUID cannot make a mark's key big: a long one is hashed. The
// mark still tells it apart from another.
func TestStreamsPublishOnceHashesLongUUIDs(t *testing.T) {
	client := pubsubtest.NewClient(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	topic := pubsubtest.Topic(t)
	long := strings.Repeat("u", 100_000)
	for _, uuid := range []string{long, long + "v", long} {
		_, err := pub.PublishOnce(topic, time.Minute, message.NewMessage(uuid, nil))
		require.NoError(t, err)
	}
	assert.Equal(t, int64(2), client.XLen(t.Context(), topic).Val())
	keys, err := client.Keys(t.Context(), "{"+topic+"}:redisbus:dedup:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 2)
	for _, key := range keys {
		assert.Less(t, len(key), len(topic)+100)
	}
}

func TestStreamsPublishOnceRefusesAWindowBelowAMillisecond(t *testing.T) {
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: pubsubtest.NewClient(t)})
	_, err := pub.PublishOnce(pubsubtest.Topic(t), time.Microsecond, message.NewMessage(watermill.NewUUID(), nil))
	require.ErrorContains(t, err, "window")
}

// On Redis Cluster the mark is in its stream's slot (the script touches
// both; Redis refuses keys of two slots with CROSSSLOT), whatever the
// topic's name: plain, hash-tagged, or with a "}" that is no tag.
func TestStreamsPublishOnceOnACluster(t *testing.T) {
	t.Parallel()
	cluster := pubsubtest.StartCluster(t, 3)
	client := cluster.Client(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	base := pubsubtest.Topic(t)
	for _, topic := range []string{base, "{" + base + "}:eu", base + "}odd"} {
		msg := message.NewMessage(watermill.NewUUID(), []byte(topic))
		var results []redisbus.PublishedOnce
		for range 2 {
			var err error
			results, err = pub.PublishOnce(topic, time.Minute, msg.Copy())
			require.NoError(t, err, topic)
		}
		assert.True(t, results[0].Duplicate, topic)
		n, err := client.XLen(t.Context(), topic).Result()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, topic)
	}
}
