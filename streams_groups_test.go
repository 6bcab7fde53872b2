package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Tests of consumer groups as people run workers with Watermill: Routers,
// several workers of one group, handlers that are slow, fail or panic.

// handledLog records which worker handled which payload, and when.
type handledLog struct {
	mu      sync.Mutex
	by      map[string][]string // payload → workers, one per time handled
	workers map[string]int      // worker → messages handled
	changed chan struct{}
}

func newHandledLog() *handledLog {
	return &handledLog{by: map[string][]string{}, workers: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (l *handledLog) add(worker, payload string) {
	l.mu.Lock()
	l.by[payload] = append(l.by[payload], worker)
	l.workers[worker]++
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// waitAll waits until every payload was handled at least once.
func (l *handledLog) waitAll(t *testing.T, payloads []string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		missing := 0
		for _, p := range payloads {
			if len(l.by[p]) == 0 {
				missing++
			}
		}
		l.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-l.changed:
		case <-deadline:
			t.Fatalf("%d of %d messages never handled", missing, len(payloads))
		}
	}
}

func (l *handledLog) duplicates() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var dups []string
	for p, by := range l.by {
		if len(by) > 1 {
			dups = append(dups, fmt.Sprintf("%s by %v", p, by))
		}
	}
	return dups
}

// times is how often payload was handled.
func (l *handledLog) times(payload string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.by[payload])
}

func (l *handledLog) count(worker string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.workers[worker]
}

// runRouter runs a Router with one handler until the test ends.
func runRouter(t *testing.T, sub message.Subscriber, topic string, handler message.NoPublishHandlerFunc, middlewares ...message.HandlerMiddleware) *message.Router {
	t.Helper()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, nil)
	require.NoError(t, err)
	router.AddMiddleware(middlewares...)
	router.AddConsumerHandler("handler", topic, sub, handler)
	go func() { _ = router.Run(context.Background()) }()
	<-router.Running()
	t.Cleanup(func() { _ = router.Close() })
	return router
}

func payloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func TestStreamsPrefetchOneMakesProgress(t *testing.T) {
	for _, handlerTime := range []time.Duration{20 * time.Millisecond, time.Millisecond} {
		t.Run("Router, handler "+handlerTime.String(), func(t *testing.T) {
			client := pubsubtest.NewClient(t)
			topic := pubsubtest.Topic(t)
			pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
			sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", Prefetch: 1}, nil)
			log := newHandledLog()
			runRouter(t, sub, topic, func(msg *message.Message) error {
				time.Sleep(handlerTime)
				log.add("w", string(msg.Payload))
				return nil
			})
			sent := payloads("job-", 12)
			publish(t, pub, topic, sent...)
			log.waitAll(t, sent, waitTimeout)
			assert.Empty(t, log.duplicates())
		})
	}
	t.Run("acked from another goroutine", func(t *testing.T) {
		client := pubsubtest.NewClient(t)
		topic := pubsubtest.Topic(t)
		pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
		sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", Prefetch: 1}, nil)
		ch, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		sent := payloads("job-", 12)
		publish(t, pub, topic, sent...)
		var got []string
		for range sent {
			msg := next(t, ch)
			got = append(got, string(msg.Payload))
			go func() {
				time.Sleep(time.Millisecond)
				msg.Ack()
			}()
		}
		assert.Equal(t, sent, got)
	})
}

// Twenty 100 ms jobs wait in the stream before two workers of one group
// start, each with its own Router and subscriber and the defaults: they
// share them, and the backlog takes about half of one worker's time.
func TestStreamsWorkersShareABacklog(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	sent := payloads("job-", 20)
	publish(t, pub, topic, sent...)

	log := newHandledLog()
	start := time.Now()
	for _, worker := range []string{"worker-1", "worker-2"} {
		sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
		runRouter(t, sub, topic, func(msg *message.Message) error {
			time.Sleep(100 * time.Millisecond)
			log.add(worker, string(msg.Payload))
			return nil
		})
	}
	log.waitAll(t, sent, waitTimeout)
	took := time.Since(start)
	assert.Empty(t, log.duplicates())
	assert.GreaterOrEqual(t, log.count("worker-1"), 5, "worker-1 must get a fair part")
	assert.GreaterOrEqual(t, log.count("worker-2"), 5, "worker-2 must get a fair part")
	assert.LessOrEqual(t, took, 1400*time.Millisecond, "two workers should take about half of one worker's 2 s")
}

// A worker that joins while another works through a backlog of slow jobs
// gets work at once: the first holds only what it is about to start.
func TestStreamsLateWorkerGetsWorkAtOnce(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	log := newHandledLog()
	slow := func(worker string) message.NoPublishHandlerFunc {
		return func(msg *message.Message) error {
			time.Sleep(50 * time.Millisecond)
			log.add(worker, string(msg.Payload))
			return nil
		}
	}
	first := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
	runRouter(t, first, topic, slow("first"))
	sent := payloads("job-", 40)
	publish(t, pub, topic, sent...)
	require.Eventually(t, func() bool { return log.count("first") >= 2 }, waitTimeout, time.Millisecond)

	joined := time.Now()
	late := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
	runRouter(t, late, topic, slow("late"))
	require.Eventually(t, func() bool { return log.count("late") >= 1 }, waitTimeout, time.Millisecond)
	assert.Less(t, time.Since(joined), 500*time.Millisecond, "the late worker's first job should start at once, not after the backlog")
	log.waitAll(t, sent, waitTimeout)
	assert.Empty(t, log.duplicates())
	assert.Greater(t, log.count("late"), 10)
}

// A subscriber whose Router handler stopped hands what it read ahead back
// to the group: another worker takes it within ClaimInterval, long before
// ClaimMinIdle, although the first subscriber stays open.
func TestStreamsStoppedHandlerHandsItsEntriesBack(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sent := payloads("job-", 200)
	publish(t, pub, topic, sent...)

	// Reads far ahead: its handlers are fast, and ReadAhead is long.
	greedy := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, ReadAhead: time.Hour}, nil)
	log := newHandledLog()
	gate := make(chan struct{})
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	// A Router closes (and closes its subscribers) once all its handlers
	// stopped: another handler keeps this one running.
	router.AddConsumerHandler("other", pubsubtest.Topic(t), greedy, func(*message.Message) error { return nil })
	var inFlight string
	blocked := make(chan struct{})
	handler := router.AddConsumerHandler("greedy", topic, greedy, func(msg *message.Message) error {
		log.add("greedy", string(msg.Payload))
		if log.count("greedy") == 6 {
			inFlight = string(msg.Payload)
			close(blocked)
			<-gate // in flight until the handler was told to stop
		}
		return nil
	})
	go func() { _ = router.Run(context.Background()) }()
	defer router.Close()
	<-blocked
	require.Eventually(t, func() bool { return greedy.Stats().Held > 100 }, waitTimeout, time.Millisecond,
		"the greedy subscriber reads ahead")
	handler.Stop()
	close(gate)
	<-handler.Stopped()
	require.Eventually(t, func() bool { return greedy.Stats().Held == 0 }, waitTimeout, time.Millisecond,
		"a subscriber with no handler left holds nothing")

	// The default ClaimMinIdle is 30 s; ClaimInterval 3 s.
	other := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
	start := time.Now()
	runRouter(t, other, topic, func(msg *message.Message) error {
		log.add("other", string(msg.Payload))
		return nil
	})
	log.waitAll(t, sent, 15*time.Second)
	assert.Less(t, time.Since(start), 10*time.Second, "handed-back entries are taken within ClaimInterval, not ClaimMinIdle")
	assert.Empty(t, log.duplicates(), "the message in flight when the handler stopped was acked by it: it must not come again (%s)", inFlight)
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, group) == 0 }, waitTimeout, time.Millisecond)
	assert.Greater(t, greedy.Stats().Released, uint64(100))
}

// Close hands back what every topic holds, within its bound, when Redis is
// far away: a subscriber of many topics on a link with 50ms replies.
func TestStreamsCloseHandsBackManyTopicsOnASlowLink(t *testing.T) {
	t.Parallel()
	direct := pubsubtest.NewClient(t)
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	client := pubsubtest.ClientFor(t, proxy.Addr())
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: direct})
	const topics = 40
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "g", CloseTimeout: 10 * time.Millisecond,
	}, nil)
	require.NoError(t, err)
	names := make([]string, topics)
	for i := range names {
		names[i] = pubsubtest.Topic(t) + "-" + strconv.Itoa(i)
		publish(t, pub, names[i], payloads("job-", 3)...)
		messages, err := sub.Subscribe(t.Context(), names[i])
		require.NoError(t, err)
		next(t, messages) // in flight, never acked
	}
	// A handler that does not ack leaves the reader no reason to read ahead.
	require.Equal(t, topics, sub.Stats().Held, "each topic holds the message in flight")

	// One topic after the other, Close would take 40 round trips: 2s.
	proxy.DelayReplies(50 * time.Millisecond)
	require.NoError(t, sub.Close(), "Close must hand everything back within CloseTimeout + 1s")
	assert.Equal(t, uint64(topics), sub.Stats().Released)
	for _, topic := range names {
		// Handed back: pending, and idle since 1970, for any claim to take.
		pending, err := direct.XPendingExt(context.Background(), &redis.XPendingExtArgs{
			Stream: topic, Group: "g", Start: "-", End: "+", Count: 10,
		}).Result()
		require.NoError(t, err)
		require.Len(t, pending, 1, topic)
		assert.Greater(t, pending[0].Idle, 24*time.Hour, "%s: the entry in flight is not handed back", topic)
	}
}

// A sole consumer of a group delivers in order (Watermill's
// GuaranteedOrderWithSingleSubscriber) even when its handler turns slow
// and the subscriber hands back what it read ahead: it takes those entries
// back before any newer one. Hand-backs wait 100ms to be sent, and a short
// slow spell leaves the handler fast again before they are in Redis.
func TestStreamsSoleConsumerKeepsOrderWhenItsHandlerTurnsSlow(t *testing.T) {
	t.Parallel()
	for _, spell := range []int{8, 10, 30} { // slow messages in a row; 8 make the subscriber hand back
		t.Run(fmt.Sprintf("spell of %d", spell), func(t *testing.T) {
			t.Parallel()
			client := pubsubtest.NewClient(t)
			topic := pubsubtest.Topic(t)
			pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
			const total = 3000
			publish(t, pub, topic, payloads("", total)...)
			sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
				Client: client, ConsumerGroup: "g", AckFlushInterval: 100 * time.Millisecond,
			}, nil)
			messages, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)

			last := -1
			for range total {
				msg := next(t, messages)
				i, err := strconv.Atoi(string(msg.Payload))
				require.NoError(t, err)
				require.Equal(t, last+1, i, "out of order (stats %+v)", sub.Stats())
				last = i
				if i%500 >= 200 && i%500 < 200+spell {
					time.Sleep(20 * time.Millisecond) // a slow spell: the read-ahead is too long now
				}
				msg.Ack()
			}
			assert.NotZero(t, sub.Stats().Released, "the slow spells made the subscriber hand entries back")
		})
	}
}

// handler.Stop() and a new handler on the same subscriber: the new one
// gets the entries the first one held, and nothing is lost.
func TestStreamsNewHandlerOnTheSameSubscriber(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, ReadAhead: time.Hour}, nil)
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	// A Router closes (and closes its subscribers) once all its handlers
	// stopped: another handler keeps this one running.
	router.AddConsumerHandler("other", pubsubtest.Topic(t), sub, func(*message.Message) error { return nil })
	log := newHandledLog()
	handler := router.AddConsumerHandler("first", topic, sub, func(msg *message.Message) error {
		log.add("first", string(msg.Payload))
		return nil
	})
	go func() { _ = router.Run(context.Background()) }()
	defer router.Close()
	<-router.Running()
	sent := payloads("job-", 300)
	publish(t, pub, topic, sent[:100]...)
	require.Eventually(t, func() bool { return log.count("first") >= 10 }, waitTimeout, time.Millisecond)
	handler.Stop()
	<-handler.Stopped()
	publish(t, pub, topic, sent[100:]...)

	router.AddConsumerHandler("second", topic, sub, func(msg *message.Message) error {
		log.add("second", string(msg.Payload))
		return nil
	})
	require.NoError(t, router.RunHandlers(context.Background()))
	log.waitAll(t, sent, waitTimeout)
	assert.Empty(t, log.duplicates(), "the message in flight when the handler stopped was acked by it")
}

// A handler that panics under Watermill's Recoverer: the panic is a Nack,
// the message comes again, and a message that always panics is
// dead-lettered after MaxDeliveries while the others go on.
func TestStreamsPanickingHandlerUnderRecoverer(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: group, MaxDeliveries: 3, NackResendDelay: time.Millisecond,
	}, nil)
	log := newHandledLog()
	var mu sync.Mutex
	panicked := map[string]int{}
	runRouter(t, sub, topic, func(msg *message.Message) error {
		p := string(msg.Payload)
		mu.Lock()
		panicked[p]++
		n := panicked[p]
		mu.Unlock()
		if p == "always" || p == "once" && n == 1 {
			panic("handler bug")
		}
		log.add("w", p)
		return nil
	}, middleware.Recoverer)
	publish(t, pub, topic, "once", "always", "fine")
	log.waitAll(t, []string{"once", "fine"}, waitTimeout)
	require.Eventually(t, func() bool { return sub.Stats().DeadLettered == 1 }, waitTimeout, time.Millisecond)
	dead, err := client.XRange(t.Context(), topic+":dead", "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, "always", dead[0].Values[redisbus.StreamsFieldPayload])
	mu.Lock()
	assert.Equal(t, 3, panicked["always"], "delivered MaxDeliveries times")
	mu.Unlock()
	assert.Empty(t, log.duplicates())
}

// A handler that changes its message and nacks it gets the message as it
// was read again, and the dead letter is the entry as it was read.
func TestStreamsRedeliveryIsAFreshCopy(t *testing.T) {
	for _, maxInFlight := range []int{1, 4} {
		t.Run(fmt.Sprintf("MaxInFlight %d", maxInFlight), func(t *testing.T) {
			client := pubsubtest.NewClient(t)
			topic := pubsubtest.Topic(t)
			pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
			sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
				Client: client, ConsumerGroup: "g", MaxDeliveries: 3, NackResendDelay: time.Millisecond, MaxInFlight: maxInFlight,
			}, nil)
			ch, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)
			sent := message.NewMessage("uuid-1", []byte("original"))
			sent.Metadata.Set("k", "v")
			require.NoError(t, pub.Publish(topic, sent))

			for delivery := 1; delivery <= 3; delivery++ {
				msg := next(t, ch)
				assert.Equal(t, "uuid-1", msg.UUID)
				assert.Equal(t, "original", string(msg.Payload), "delivery %d", delivery)
				assert.Equal(t, "v", msg.Metadata.Get("k"))
				assert.Empty(t, msg.Metadata.Get("added"))
				assert.Equal(t, strconv.Itoa(delivery), msg.Metadata.Get(redisbus.MetadataDeliveryCount))
				msg.Payload[0] = 'X' // in place
				msg.Payload = []byte("changed")
				msg.Metadata.Set("k", "changed")
				msg.Metadata.Set("added", "yes")
				msg.Nack()
			}
			require.Eventually(t, func() bool { return sub.Stats().DeadLettered == 1 }, waitTimeout, time.Millisecond)
			dead, err := client.XRange(t.Context(), topic+":dead", "-", "+").Result()
			require.NoError(t, err)
			require.Len(t, dead, 1)
			assert.Equal(t, "original", dead[0].Values[redisbus.StreamsFieldPayload])
			assert.Equal(t, "uuid-1", dead[0].Values[redisbus.StreamsFieldUUID])
			assert.Equal(t, "\x81\xa1k\xa1v", dead[0].Values[redisbus.StreamsFieldMetadata], "the metadata as read")
		})
	}
}

// Entries without a UUID (other producers) keep the one they were given
// on their first delivery.
func TestStreamsRedeliveryKeepsTheUUID(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", NackResendDelay: time.Millisecond}, nil)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: topic, Values: []string{"payload", "from php"}}).Err())
	first := next(t, ch)
	first.Nack()
	second := next(t, ch)
	assert.Equal(t, first.UUID, second.UUID)
	second.Ack()
}

// Close called twice at once (a Router and the application): whichever
// returns first, the consumer name is free again.
func TestStreamsConcurrentCloseReleasesTheName(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	config := redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", Consumer: "worker-1"}
	for range 30 {
		sub, err := redisbus.NewStreamsSubscriber(config, nil)
		require.NoError(t, err)
		require.NoError(t, sub.SubscribeInitialize(topic))
		closed := make(chan error, 2)
		for range 2 {
			go func() { closed <- sub.Close() }()
		}
		require.NoError(t, <-closed)
		next, err := redisbus.NewStreamsSubscriber(config, nil)
		require.NoError(t, err)
		require.NoError(t, next.SubscribeInitialize(topic), "the name must be free once a Close returned")
		require.NoError(t, next.Close())
		require.NoError(t, <-closed)
	}
}

// An explicit consumer name that a live subscriber holds is refused, with
// the field named; the Consumer field is checked per stream and group.
func TestStreamsExplicitNameInUseIsRefused(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	config := redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", Consumer: "worker-1"}
	holder := newStreamsSubscriber(t, config, nil)
	require.NoError(t, holder.SubscribeInitialize(topic))

	// The same name in the same process: refused at once.
	twin := newStreamsSubscriber(t, config, nil)
	err := twin.SubscribeInitialize(topic)
	var configErr *redisbus.ConfigError
	require.True(t, errors.As(err, &configErr), "got %v", err)
	assert.Equal(t, "StreamsSubscriberConfig.Consumer", configErr.Field)
	// Another stream, or another group: fine.
	require.NoError(t, twin.SubscribeInitialize(pubsubtest.Topic(t)))
	other := config
	other.ConsumerGroup = "h"
	require.NoError(t, newStreamsSubscriber(t, other, nil).SubscribeInitialize(topic))
}

// A worker whose handlers turn slow after a run of fast messages read far
// ahead: it hands back what it will not start soon, and another worker of
// the group takes its part.
func TestStreamsWorkerThatTurnsSlowHandsBackItsReadAhead(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	config := redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, ClaimInterval: 100 * time.Millisecond}
	log := newHandledLog()
	handler := func(worker string) message.NoPublishHandlerFunc {
		return func(msg *message.Message) error {
			if strings.HasPrefix(string(msg.Payload), "slow-") {
				time.Sleep(100 * time.Millisecond)
			}
			log.add(worker, string(msg.Payload))
			return nil
		}
	}
	first := newStreamsSubscriber(t, config, nil)
	runRouter(t, first, topic, handler("first"))
	fast := payloads("fast-", 500)
	publish(t, pub, topic, fast...)
	log.waitAll(t, fast, waitTimeout) // fast handlers: the first reads far ahead now

	second := newStreamsSubscriber(t, config, nil)
	runRouter(t, second, topic, handler("second"))
	slow := payloads("slow-", 30)
	publish(t, pub, topic, slow...)
	log.waitAll(t, slow, waitTimeout)
	assert.Empty(t, log.duplicates())
	assert.GreaterOrEqual(t, log.count("second"), 8, "the second worker must get a part of the slow jobs")
}

// A message that keeps failing holds its worker's queue through its
// backoff (ordered delivery): what that worker read ahead behind it goes
// back to the group once the backoff is long, and another worker handles
// it instead of everything waiting for the dead letter.
func TestStreamsNackBackoffDoesNotHoldTheGroupsWork(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	config := redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: group, ClaimInterval: 100 * time.Millisecond,
		NackResendDelay: 500 * time.Millisecond, MaxDeliveries: 6, // 0.5+1+2+4+8 s of backoff
		ReadAhead: time.Second, // the first worker reads everything behind the failing message
	}
	log := newHandledLog()
	failed := make(chan struct{}, 10)
	worker := func(name string) {
		sub := newStreamsSubscriber(t, config, nil)
		runRouter(t, sub, topic, func(msg *message.Message) error {
			if string(msg.Payload) == "fails" {
				failed <- struct{}{}
				return errors.New("always")
			}
			time.Sleep(5 * time.Millisecond)
			log.add(name, string(msg.Payload))
			return nil
		})
	}
	worker("first")
	publish(t, pub, topic, payloads("warm-up-", 20)...) // the first learns its handlers are quick
	log.waitAll(t, payloads("warm-up-", 20), waitTimeout)
	good := payloads("job-", 200)
	publish(t, pub, topic, append([]string{"fails"}, good...)...)
	<-failed
	start := time.Now()
	worker("second")
	log.waitAll(t, good, waitTimeout)
	assert.Less(t, time.Since(start), 6*time.Second, "the good messages must not wait for the failing one's 15 s of backoff")
	assert.Greater(t, log.count("second"), 100)
	assert.Empty(t, log.duplicates())
}

// Workers whose messages each fail once: a nack's backoff holds an ordered
// worker's queue, so it counts as work, and the group shares the backlog
// rather than one worker holding it through every backoff.
func TestStreamsWorkersShareMessagesThatFailOnce(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	sent := payloads("job-", 60)
	publish(t, pub, topic, sent...)
	log := newHandledLog()
	var mu sync.Mutex
	failed := map[string]bool{}
	for _, worker := range []string{"a", "b", "c"} {
		sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group}, nil)
		runRouter(t, sub, topic, func(msg *message.Message) error {
			mu.Lock()
			first := !failed[string(msg.Payload)]
			failed[string(msg.Payload)] = true
			mu.Unlock()
			if first {
				return errors.New("fails once") // then waits NackResendDelay, 100 ms
			}
			log.add(worker, string(msg.Payload))
			return nil
		})
	}
	log.waitAll(t, sent, 3*waitTimeout)
	assert.Empty(t, log.duplicates())
	for _, worker := range []string{"a", "b", "c"} {
		assert.GreaterOrEqual(t, log.count(worker), 10, "%s must get a part of the backlog", worker)
	}
}

// A message whose Subscribe ended before its handler settled it comes
// again, counted as a second delivery.
func TestStreamsMessageNeverSettledComesAgainCounted(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: "g", CloseTimeout: 50 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	first, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	publish(t, pub, topic, "x")
	abandoned := next(t, first)
	assert.Equal(t, "1", abandoned.Metadata.Get(redisbus.MetadataDeliveryCount))
	cancel() // the consumer leaves with the message unsettled

	second, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	again := next(t, second)
	assert.Equal(t, "x", string(again.Payload))
	assert.Equal(t, "2", again.Metadata.Get(redisbus.MetadataDeliveryCount))
	again.Ack()
	abandoned.Ack() // late: changes nothing
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, "g") == 0 }, waitTimeout, time.Millisecond)
}

// Close ends a read that Redis has already answered by letting it return,
// not by cutting its connection: the entries the read moved to this
// consumer are handed back with the rest, and another consumer has them at
// once. Cut off, they would stay pending with the closed consumer until
// ClaimMinIdle (a minute here). The reader's replies are held back 300ms,
// so the read that gets the message is still on its way when Close starts.
func TestStreamsCloseHandsBackWhatAReadInFlightGot(t *testing.T) {
	t.Parallel()
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	direct := server.Client(t)
	proxy := pubsubtest.NewProxy(t, server.Addr)
	config := redisbus.StreamsSubscriberConfig{
		Client: pubsubtest.ClientFor(t, proxy.Addr()), ConsumerGroup: "g", Consumer: "closing",
		ClaimMinIdle: time.Minute, ClaimInterval: time.Minute, BlockTime: 10 * time.Second,
	}
	sub, err := redisbus.NewStreamsSubscriber(config, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	_, err = sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return blockedClients(t, direct) == 1 }, waitTimeout, time.Millisecond,
		"the reader never blocked waiting for entries")

	proxy.DelayReplies(300 * time.Millisecond)
	publish(t, newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: direct}), topic, "job")
	// Redis served the blocked read before it answered the publish.
	require.Equal(t, 0, blockedClients(t, direct))
	require.NoError(t, sub.Close())

	config.Client, config.Consumer = direct, "other" // a restart under the same name would resume its entries
	other := newStreamsSubscriber(t, config, nil)
	messages, err := other.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	msg := next(t, messages)
	assert.Equal(t, "job", string(msg.Payload))
	msg.Ack()
}

// blockedClients is how many clients wait in a blocking command on the
// server behind client.
func blockedClients(t *testing.T, client *redis.Client) int {
	t.Helper()
	info, err := client.Info(context.Background(), "clients").Result()
	require.NoError(t, err)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "blocked_clients:"); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no blocked_clients in INFO clients: %s", info)
	return 0
}
