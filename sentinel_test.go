package redisbus_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// flow publishes numbered messages in a loop, as an application would
// (retrying a failed Publish after a pause), and records when each
// arrives.
type flow struct {
	mu       sync.Mutex
	next     int
	received map[string]time.Time
}

func (f *flow) publish(ctx context.Context, pub message.Publisher, topic string) {
	for ctx.Err() == nil {
		f.mu.Lock()
		n := f.next
		f.mu.Unlock()
		msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(n)))
		if err := pub.Publish(topic, msg); err != nil {
			time.Sleep(20 * time.Millisecond) // Redis is failing over
			continue
		}
		f.mu.Lock()
		f.next++
		f.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func (f *flow) consume(messages <-chan *message.Message) {
	for msg := range messages {
		f.mu.Lock()
		if _, seen := f.received[string(msg.Payload)]; !seen {
			f.received[string(msg.Payload)] = time.Now()
		}
		f.mu.Unlock()
		msg.Ack()
	}
}

// longestPause returns the longest time without an arrival since start.
func (f *flow) longestPause(start time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var arrivals []time.Time
	for _, at := range f.received {
		if at.After(start) {
			arrivals = append(arrivals, at)
		}
	}
	slices.SortFunc(arrivals, time.Time.Compare)
	var longest time.Duration
	last := start
	for _, at := range arrivals {
		longest = max(longest, at.Sub(last))
		last = at
	}
	return longest
}

// mark returns the number of the next message to be published.
func (f *flow) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next
}

// awaitFlowSince waits until a message numbered from on arrives (Pub/Sub
// loses those published while a subscriber reconnects, so any of them
// will do) and returns how long after start: the interruption.
func (f *flow) awaitFlowSince(t *testing.T, start time.Time, from int, what string) time.Duration {
	t.Helper()
	var arrived time.Time
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for n := from; n < f.next; n++ {
			if at, ok := f.received[strconv.Itoa(n)]; ok {
				arrived = at
				return true
			}
		}
		return false
	}, 60*time.Second, 5*time.Millisecond, "messages stopped after %s", what)
	return arrived.Sub(start)
}

// With clients from redis.NewFailoverClient, Streams and Pub/Sub carry on
// by themselves through a graceful failover (SENTINEL FAILOVER) and a
// primary killed with SIGKILL: publishers, a consumer group's subscriber
// (its blocking reads run on a client it makes from the failover client's
// options) and a Pub/Sub subscriber, with no restart of anything.
func TestStreamsAndPubSubCarryOnThroughSentinelFailovers(t *testing.T) {
	sentinels := pubsubtest.StartSentinels(t, 3)
	client := sentinels.FailoverClient(t)
	topic := pubsubtest.Topic(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	streams := &flow{received: map[string]time.Time{}}
	streamsSub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g"}, nil)
	entries, err := streamsSub.Subscribe(ctx, topic)
	require.NoError(t, err)
	go streams.consume(entries)
	go streams.publish(ctx, newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client}), topic)

	pubsub := &flow{received: map[string]time.Time{}}
	pubsubSub := newSubscriber(t, redisbus.SubscriberConfig{Client: client}, nil)
	messages, err := pubsubSub.Subscribe(ctx, topic)
	require.NoError(t, err)
	go pubsub.consume(messages)
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
		failover.do(t)
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
}
