package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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

func TestPublishSendsOneCallInOneRoundTrip(t *testing.T) {
	client := pubsubtest.NewClient(t)
	counter := &pipelineCounter{command: "publish"}
	client.AddHook(counter)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: client})
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	payloads := []string{"a", "b", "c", "d", "e"}
	publish(t, pub, topic, payloads...)

	assert.Equal(t, int64(1), counter.roundTrips.Load())
	assert.Equal(t, int64(len(payloads)), counter.commands.Load())
	assert.Equal(t, payloads, receive(t, ch, len(payloads)))
}

func TestPublishCountTellsWhetherAnyoneListens(t *testing.T) {
	pub := newPublisher(t, redisbus.PublisherConfig{})
	topic := pubsubtest.Topic(t)

	n, err := pub.PublishCount(t.Context(), topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
	require.NoError(t, err)
	assert.Zero(t, n, "nobody subscribed yet")

	// Two Subscribers (two processes, say) with two Subscribe calls each:
	// Redis counts one connection per Subscriber.
	for range 2 {
		sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
		for range 2 {
			_, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)
		}
	}
	n, err = pub.PublishCount(t.Context(), topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
}

func TestPublishHonoursEachMessageContext(t *testing.T) {
	pub := newPublisher(t, redisbus.PublisherConfig{})
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	canceled := message.NewMessage(watermill.NewUUID(), []byte("canceled"))
	canceled.SetContext(ctx)
	fine := message.NewMessage(watermill.NewUUID(), []byte("fine"))

	err = pub.Publish(topic, fine, canceled)
	require.ErrorIs(t, err, context.Canceled)

	// Nothing of the failed call was sent: the next message is the marker.
	publish(t, pub, topic, "marker")
	assert.Equal(t, []string{"marker"}, receive(t, ch, 1))
}

// A caller that gives up while its round trip is stuck must not disturb the
// calls after it: the flusher still finishes the abandoned call later.
func TestPublishGivenUpWhileWaitingDoesNotDisturbLaterCalls(t *testing.T) {
	client := pubsubtest.NewClient(t)
	stuck := &stallFirstPipeline{release: make(chan struct{})}
	client.AddHook(stuck)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: client})
	sub := newSubscriber(t, redisbus.SubscriberConfig{}, nil)
	topic := pubsubtest.Topic(t)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = pub.PublishCount(ctx, topic, message.NewMessage(watermill.NewUUID(), []byte("abandoned")))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(stuck.release)

	const goroutines, each = 64, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				msg := message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprintf("%d-%d", g, i)))
				n, err := pub.PublishCount(t.Context(), topic, msg)
				assert.NoError(t, err)
				assert.Equal(t, int64(1), n, "a later call must get its own reply")
			}
		})
	}
	wg.Wait()

	// The abandoned message was in the stuck pipeline: it arrives too.
	got := receive(t, ch, goroutines*each+1)
	assert.Contains(t, got, "abandoned")
	assert.Len(t, slices.Compact(slices.Sorted(slices.Values(got))), goroutines*each+1, "no duplicates")
}

// stallFirstPipeline holds the first pipeline a client sends until release
// is closed.
type stallFirstPipeline struct {
	release chan struct{}
	stalled atomic.Bool
}

func (h *stallFirstPipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *stallFirstPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *stallFirstPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.stalled.CompareAndSwap(false, true) {
			<-h.release
		}
		return next(ctx, cmds)
	}
}

func TestPublishAfterCloseFailsAndLeavesTheClientOpen(t *testing.T) {
	client := pubsubtest.NewClient(t)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: client})
	require.NoError(t, pub.Close())
	require.NoError(t, pub.Close(), "Close is idempotent")

	err := pub.Publish(pubsubtest.Topic(t), message.NewMessage(watermill.NewUUID(), nil))
	assert.ErrorIs(t, err, redisbus.ErrPublisherClosed)
	assert.NoError(t, client.Ping(t.Context()).Err(), "the caller's client must stay open")
}

// A Publish that Close ends, however the two meet, fails with an error
// that is ErrPublisherClosed: not the "context canceled" of the pipeline
// Close cancelled, which reads as the caller's own context; and Close
// reports no publish Redis did not answer when none was sent. Close races
// publishers that publish until it stops them, 300 times.
func TestPublishEndedByCloseIsErrPublisherClosed(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	publishers := map[string]func() (message.Publisher, error){
		"Pub/Sub": func() (message.Publisher, error) {
			return redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
		},
		"Streams": func() (message.Publisher, error) {
			return redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
		},
	}
	for name, newPublisher := range publishers {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			others := map[string]int{}
			for range 300 {
				pub, err := newPublisher()
				require.NoError(t, err)
				var publishing, started sync.WaitGroup
				started.Add(4)
				for range 4 {
					publishing.Go(func() {
						for first := true; ; first = false {
							err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil))
							if first {
								started.Done()
							}
							if err == nil {
								continue
							}
							if !errors.Is(err, redisbus.ErrPublisherClosed) {
								mu.Lock()
								others[err.Error()]++
								mu.Unlock()
							}
							return
						}
					})
				}
				started.Wait() // Close meets publishes under way
				require.NoError(t, pub.Close())
				publishing.Wait()
			}
			assert.Empty(t, others, "errors of publishes Close ended that are not ErrPublisherClosed")
		})
	}
}

func TestPublisherConfigErrorsNameTheField(t *testing.T) {
	_, err := redisbus.NewPublisher(redisbus.PublisherConfig{}, nil)
	var configErr *redisbus.ConfigError
	require.True(t, errors.As(err, &configErr), "got %v", err)
	assert.Equal(t, "PublisherConfig.Client", configErr.Field)
	assert.Contains(t, err.Error(), "PublisherConfig.Client")
}

// Watermill's components/metrics labels series with a Publisher's or
// Subscriber's String: it says what kind it is, never what varies per
// process.
func TestNamesForMetrics(t *testing.T) {
	client := pubsubtest.NewClient(t)
	names := map[string]fmt.Stringer{
		"redisbus.Publisher":                     newPublisher(t, redisbus.PublisherConfig{Client: client}),
		"redisbus.Publisher(async)":              newPublisher(t, redisbus.PublisherConfig{Client: client, Async: true}),
		"redisbus.Publisher(sharded)":            newPublisher(t, redisbus.PublisherConfig{Client: client, Sharded: true}),
		"redisbus.Publisher(sharded,async)":      newPublisher(t, redisbus.PublisherConfig{Client: client, Sharded: true, Async: true}),
		"redisbus.Subscriber":                    newSubscriber(t, redisbus.SubscriberConfig{Client: client}, nil),
		"redisbus.Subscriber(sharded)":           newSubscriber(t, redisbus.SubscriberConfig{Client: client, Sharded: true}, nil),
		"redisbus.StreamsPublisher":              newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client}),
		"redisbus.StreamsSubscriber(fan-out)":    newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client}, nil),
		"redisbus.StreamsSubscriber(group=jobs)": newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "jobs"}, nil),
	}
	for want, component := range names {
		assert.Equal(t, want, component.String())
	}
}
