package dedup_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func newMiddleware(t *testing.T, config dedup.Config) *dedup.Middleware {
	t.Helper()
	m, err := dedup.NewMiddleware(config, nil)
	require.NoError(t, err)
	return m
}

// keyOf is where a Middleware with config keeps msg's mark outside a Router
// (no handler name).
func keyOf(config dedup.Config, msg *message.Message) string {
	name, _ := dedup.HandlerAndUUID(msg)
	return config.Prefix + name
}

// awaitMark waits until msg's key holds the mark "handled": the Middleware
// writes it once the message was acked.
func awaitMark(t *testing.T, config dedup.Config, msg *message.Message) {
	t.Helper()
	eventually(t, "the message is marked handled", func() bool {
		return isMark(config.Client.Get(t.Context(), keyOf(config, msg)).Val())
	})
}

// isMark tells a key's value "handled" ("d" and a token) from a claim.
func isMark(value string) bool { return strings.HasPrefix(value, "d") }

// A copy of a message that was handled and acked is dropped, in this
// process or another, without running the handler.
func TestMiddlewareDropsACopyOfAHandledMessage(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	one := newMiddleware(t, config)
	config.Client = pubsubtest.NewClient(t)
	other := newMiddleware(t, config)
	var runs atomic.Int64
	handler := func(*message.Message) ([]*message.Message, error) {
		runs.Add(1)
		return nil, nil
	}
	msg := newMessage("order")

	_, err := one.Middleware(handler)(msg)
	require.NoError(t, err)
	msg.Ack()
	eventually(t, "the message is marked handled", func() bool { return one.Stats().Marked == 1 })
	for _, m := range []*dedup.Middleware{other, one} {
		copied := msg.Copy()
		_, err = m.Middleware(handler)(copied)
		require.NoError(t, err, "a duplicate is dropped: the Router acks it")
	}
	assert.Equal(t, int64(1), runs.Load())
	assert.Equal(t, dedup.MiddlewareStats{Handled: 1, Marked: 1, Duplicates: 1}, one.Stats())
	assert.Equal(t, dedup.MiddlewareStats{Duplicates: 1}, other.Stats())

	ttl := config.Client.PTTL(t.Context(), keyOf(config, msg)).Val()
	assert.Greater(t, ttl, 9*time.Minute, "the mark lasts the Window (10 minutes by default)")
}

// The difference that matters under at-least-once delivery: a handler
// fails, the Router nacks, redisbus delivers the message again. Watermill's
// Deduplicator marked the message before the handler ran and drops the
// redelivery: the message is never handled. The Middleware released its
// claim and runs the redelivery.
func TestAFailedHandlersRedelivery(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dedup    func(t *testing.T, config dedup.Config) message.HandlerMiddleware
		wantRuns int64
	}{
		{"Deduplicator with Repository drops it", func(t *testing.T, config dedup.Config) message.HandlerMiddleware {
			d := &middleware.Deduplicator{KeyFactory: dedup.UUID, Repository: newRepository(t, config)}
			return d.Middleware
		}, 1},
		{"Middleware runs it", func(t *testing.T, config dedup.Config) message.HandlerMiddleware {
			return newMiddleware(t, config).Middleware
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := pubsubtest.NewClient(t)
			topic := pubsubtest.Topic(t)
			var runs atomic.Int64
			handled := make(chan struct{}, 1)
			sub := startRouter(t, client, topic, tc.dedup(t, testConfig(t, client)), func(msg *message.Message) error {
				if runs.Add(1) == 1 {
					return errors.New("payment provider timed out")
				}
				handled <- struct{}{}
				return nil
			})
			pub := newStreamsPublisher(t, client)
			require.NoError(t, pub.Publish(topic, newMessage("order")))

			// Either way the message ends acked: handled, or dropped as
			// a duplicate.
			eventually(t, "the message is settled", func() bool {
				return sub.Stats().Acked == 1
			})
			assert.Equal(t, tc.wantRuns, runs.Load())
			assert.Equal(t, uint64(1), sub.Stats().Nacked, "redelivered once")
			if tc.wantRuns == 2 {
				<-handled
			}
		})
	}
}

// A copy arriving while another delivery handles the message is nacked
// with ErrInProgress, however long the handler takes (the claim is
// renewed); once the first is acked, copies are dropped.
func TestMiddlewareNacksACopyWhileAnotherIsInProgress(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	config.Lease = 30 * time.Millisecond
	m := newMiddleware(t, config)
	entered, proceed := make(chan struct{}), make(chan struct{})
	slow := m.Middleware(func(*message.Message) ([]*message.Message, error) {
		entered <- struct{}{}
		<-proceed
		return nil, nil
	})
	msg := newMessage("order")
	first := make(chan error, 1)
	go func() { _, err := slow(msg); first <- err }()
	<-entered

	other := newMiddleware(t, config)
	never := other.Middleware(func(*message.Message) ([]*message.Message, error) {
		t.Error("a copy ran while the message was in progress")
		return nil, nil
	})
	for range 4 {
		_, err := never(msg.Copy())
		require.ErrorIs(t, err, dedup.ErrInProgress)
		time.Sleep(config.Lease) // four leases in all: the renewals keep the claim
	}
	close(proceed)
	require.NoError(t, <-first)
	msg.Ack()
	awaitMark(t, config, msg)
	_, err := never(msg.Copy())
	require.NoError(t, err)
	assert.Equal(t, dedup.MiddlewareStats{InProgress: 4, Duplicates: 1}, other.Stats())
}

// A handler that panics releases its claim, as one that fails: the
// redelivery runs at once.
func TestMiddlewareReleasesTheClaimOfAHandlerThatPanics(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	m := newMiddleware(t, config)
	var runs atomic.Int64
	h := m.Middleware(func(*message.Message) ([]*message.Message, error) {
		if runs.Add(1) == 1 {
			panic("bug")
		}
		return nil, nil
	})
	msg := newMessage("order")
	require.Panics(t, func() { _, _ = h(msg) })
	eventually(t, "the claim is released", func() bool {
		return config.Client.Exists(t.Context(), keyOf(config, msg)).Val() == 0
	})
	_, err := h(msg.Copy())
	require.NoError(t, err)
	assert.Equal(t, int64(2), runs.Load())
}

// A handler that fails releases its claim before its error returns, so a
// retrying middleware around the Middleware (Watermill's Retry) runs the
// handler again at once, and the message is marked once it is acked.
func TestMiddlewareUnderARetryingMiddleware(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	m := newMiddleware(t, config)
	var runs atomic.Int64
	retry := middleware.Retry{MaxRetries: 2}
	h := retry.Middleware(m.Middleware(func(*message.Message) ([]*message.Message, error) {
		if runs.Add(1) == 1 {
			return nil, errors.New("payment provider timed out")
		}
		return nil, nil
	}))
	msg := newMessage("order")
	_, err := h(msg)
	require.NoError(t, err)
	msg.Ack()
	eventually(t, "the message is marked handled", func() bool { return m.Stats().Marked == 1 })
	assert.Equal(t, int64(2), runs.Load())
	assert.Equal(t, dedup.MiddlewareStats{Handled: 2, Marked: 1, Released: 1}, m.Stats())
}

// The default key holds the handler's name: two handlers of one message
// (two consumer groups, CQRS event handlers) each handle it once.
func TestMiddlewareGivesEachHandlerEveryMessage(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	m := newMiddleware(t, config)
	bus := gochannel.NewGoChannel(gochannel.Config{}, nil)
	t.Cleanup(func() { _ = bus.Close() })
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	router.AddMiddleware(m.Middleware)
	var mu sync.Mutex
	runs := map[string]int{}
	for _, name := range []string{"send-confirmation", "sales-report"} {
		router.AddConsumerHandler(name, "events", bus, func(*message.Message) error {
			mu.Lock()
			runs[name]++
			mu.Unlock()
			return nil
		})
	}
	go func() { _ = router.Run(context.Background()) }()
	t.Cleanup(func() { _ = router.Close() })
	<-router.Running()

	msg := newMessage("order placed")
	require.NoError(t, bus.Publish("events", msg))
	eventually(t, "both handlers are done", func() bool {
		return m.Stats().Handled == 2
	})
	eventually(t, "both are marked", func() bool {
		keys, _ := config.Client.Keys(t.Context(), config.Prefix+"*").Result()
		for _, k := range keys {
			if !isMark(config.Client.Get(t.Context(), k).Val()) {
				return false
			}
		}
		return len(keys) == 2
	})
	require.NoError(t, bus.Publish("events", msg.Copy()))
	eventually(t, "the copy is dropped by both", func() bool {
		return m.Stats().Duplicates == 2
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]int{"send-confirmation": 1, "sales-report": 1}, runs)
}

// Commit writes the side effect and the mark in one transaction: a copy
// arriving after it, in another process, is dropped even though the first
// delivery was never acked (its process died, say).
func TestMiddlewareCommitMarksWithTheSideEffect(t *testing.T) {
	client := pubsubtest.NewClient(t)
	config := testConfig(t, client)
	counter := config.Prefix + "revenue"
	m := newMiddleware(t, config)
	charge := func(m *dedup.Middleware) message.HandlerFunc {
		return m.Middleware(func(msg *message.Message) ([]*message.Message, error) {
			return nil, m.Commit(msg.Context(), msg, func(pipe redis.Pipeliner) error {
				pipe.IncrBy(msg.Context(), counter, 42)
				return nil
			})
		})
	}
	msg := newMessage("order")
	_, err := charge(m)(msg)
	require.NoError(t, err)
	// Never acked: the process dies here.
	assert.True(t, isMark(client.Get(t.Context(), keyOf(config, msg)).Val()), "marked with the side effect")

	config.Client = pubsubtest.NewClient(t)
	other := newMiddleware(t, config)
	_, err = charge(other)(msg.Copy())
	require.NoError(t, err)
	assert.Equal(t, "42", client.Get(t.Context(), counter).Val())
	assert.Equal(t, dedup.MiddlewareStats{Duplicates: 1}, other.Stats())
	assert.Equal(t, dedup.MiddlewareStats{Handled: 1, Committed: 1}, m.Stats())
}

// A mark whose reply was lost is sent again by go-redis, after Redis ran
// the first one: the retry finds the first attempt's mark, which is this
// delivery's own, not a claim that lapsed (ClaimsLost would tell an
// operator to raise Lease for a slow network).
func TestMiddlewareMarkRetriedAfterALostReplyIsNotALostClaim(t *testing.T) {
	proxy, client := clientBehindProxy(t, 0)
	config := testConfig(t, client)
	m := newMiddleware(t, config)
	msg := newMessage("order")
	_, err := m.Middleware(func(*message.Message) ([]*message.Message, error) {
		// The claim's connection turns slow: the mark's first reply is late.
		proxy.DelayOpenConnections(700 * time.Millisecond)
		return nil, nil
	})(msg)
	require.NoError(t, err)
	msg.Ack()

	eventually(t, "the message is marked handled", func() bool { return m.Stats().Marked == 1 })
	stats := m.Stats()
	assert.Zero(t, stats.ClaimsLost)
	assert.Zero(t, stats.Errors, "go-redis sent the mark again on a new connection")
	assert.True(t, isMark(pubsubtest.NewClient(t).Get(t.Context(), keyOf(config, msg)).Val()))
}

// A handler that runs for longer than Lease/3 has its claim renewed: a
// renewal during a Commit (here, fn itself takes longer than a renewal
// period) touches the WATCHed key, which must not fail the transaction as
// if the claim were lost. A second Commit of the delivery is refused, and
// is no lost claim either.
func TestMiddlewareCommitWhileTheClaimIsRenewed(t *testing.T) {
	client := pubsubtest.NewClient(t)
	config := testConfig(t, client)
	config.Lease = 300 * time.Millisecond // renewed every 100 ms
	counter := config.Prefix + "revenue"
	m := newMiddleware(t, config)
	for i := range 3 {
		msg := newMessage(fmt.Sprint("order ", i))
		_, err := m.Middleware(func(msg *message.Message) ([]*message.Message, error) {
			err := m.Commit(msg.Context(), msg, func(pipe redis.Pipeliner) error {
				time.Sleep(config.Lease/3 + 10*time.Millisecond) // a renewal falls due meanwhile
				pipe.IncrBy(msg.Context(), counter, 10)
				return nil
			})
			if err != nil {
				return nil, err
			}
			again := m.Commit(msg.Context(), msg, func(pipe redis.Pipeliner) error {
				pipe.IncrBy(msg.Context(), counter, 10)
				return nil
			})
			require.Error(t, again)
			assert.NotErrorIs(t, again, dedup.ErrClaimLost)
			return nil, nil
		})(msg)
		require.NoError(t, err)
		msg.Ack()
	}
	assert.Equal(t, "30", client.Get(t.Context(), counter).Val())
	stats := m.Stats()
	assert.EqualValues(t, 3, stats.Committed)
	assert.Zero(t, stats.ClaimsLost)
}

// A handler that fails releases its claim from its own goroutine while the
// claim's renewal runs on another: a renewal that finds the claim gone
// because it was released lost nothing (no ClaimsLost, no error log that
// would tell an operator to raise Lease). Here each handler fails just as
// a renewal falls due.
func TestMiddlewareReleaseDuringARenewalIsNoLostClaim(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	config.Lease = 150 * time.Millisecond // renewed every 50 ms
	m := newMiddleware(t, config)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			msg := newMessage(fmt.Sprint("order ", i))
			_, err := m.Middleware(func(*message.Message) ([]*message.Message, error) {
				time.Sleep(config.Lease / 3)
				return nil, errors.New("declined")
			})(msg)
			assert.Error(t, err)
			msg.Nack()
		})
	}
	wg.Wait()
	stats := m.Stats()
	assert.Zero(t, stats.ClaimsLost)
	assert.EqualValues(t, 20, stats.Released)
}

// A Commit whose claim is gone (it lapsed, and another delivery claimed the
// message) runs nothing and says so; a Commit whose fn fails runs nothing
// either; a Commit outside the Middleware's handler is refused.
func TestMiddlewareCommitRunsNothingWhenItMust(t *testing.T) {
	client := pubsubtest.NewClient(t)
	config := testConfig(t, client)
	counter := config.Prefix + "revenue"
	m := newMiddleware(t, config)
	incr := func(ctx context.Context) func(redis.Pipeliner) error {
		return func(pipe redis.Pipeliner) error {
			pipe.Incr(ctx, counter)
			return nil
		}
	}

	msg := newMessage("taken over")
	_, err := m.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		require.NoError(t, client.Set(t.Context(), keyOf(config, msg), "c-another-delivery", time.Minute).Err())
		return nil, m.Commit(msg.Context(), msg, incr(msg.Context()))
	})(msg)
	require.ErrorIs(t, err, dedup.ErrClaimLost)
	assert.Equal(t, uint64(1), m.Stats().ClaimsLost)

	failing := errors.New("invalid order")
	_, err = m.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		return nil, m.Commit(msg.Context(), msg, func(redis.Pipeliner) error { return failing })
	})(newMessage("fails"))
	require.ErrorIs(t, err, failing)

	require.Error(t, m.Commit(t.Context(), newMessage("outside"), incr(t.Context())))
	assert.Equal(t, int64(0), client.Exists(t.Context(), counter).Val(), "no Commit ran its commands")
}

// startRouter runs handler behind mw on a Streams consumer group that
// redelivers at once, and returns its subscriber.
func startRouter(t *testing.T, client redis.UniversalClient, topic string, mw message.HandlerMiddleware, handler message.NoPublishHandlerFunc) *redisbus.StreamsSubscriber {
	t.Helper()
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "workers", Consumer: "w-" + watermill.NewShortUUID(),
		NackResendDelay: time.Millisecond,
	}, nil)
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	router.AddConsumerHandler("handler", topic, sub, handler).AddMiddleware(mw)
	go func() { _ = router.Run(context.Background()) }()
	t.Cleanup(func() {
		_ = router.Close()
		_ = sub.Close()
	})
	select {
	case <-router.Running():
	case <-time.After(waitTimeout):
		t.Fatal("the router did not start")
	}
	return sub
}

func newStreamsPublisher(t *testing.T, client redis.UniversalClient) *redisbus.StreamsPublisher {
	t.Helper()
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// A command that fails inside the transaction (here: INCRBY on a list)
// does not undo the others, Redis having no rollback: Commit takes the mark
// back, so that the redelivery runs the handler again, and says so.
func TestMiddlewareCommitWithACommandThatFailsInTheTransaction(t *testing.T) {
	client := pubsubtest.NewClient(t)
	config := testConfig(t, client)
	counter, seen := config.Prefix+"revenue", config.Prefix+"seen"
	require.NoError(t, client.RPush(t.Context(), counter, "not a number").Err())
	m := newMiddleware(t, config)
	charge := m.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		return nil, m.Commit(msg.Context(), msg, func(pipe redis.Pipeliner) error {
			pipe.SAdd(msg.Context(), seen, msg.UUID)
			pipe.IncrBy(msg.Context(), counter, 42)
			return nil
		})
	})
	msg := newMessage("order")
	_, err := charge(msg)
	require.ErrorContains(t, err, "WRONGTYPE")
	assert.False(t, isMark(client.Get(t.Context(), keyOf(config, msg)).Val()), "the mark is taken back")

	// The key is fixed; the redelivery runs, and commits.
	require.NoError(t, client.Del(t.Context(), counter).Err())
	_, err = charge(msg.Copy())
	require.NoError(t, err)
	assert.Equal(t, "42", client.Get(t.Context(), counter).Val())
	assert.True(t, isMark(client.Get(t.Context(), keyOf(config, msg)).Val()))
}
