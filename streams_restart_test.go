package redisbus_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Workers in processes of their own, restarted gracefully, killed with
// SIGKILL, paused with SIGSTOP: what happens to the messages they held.

// deadLetters returns the payloads in topic's dead-letter stream.
func deadLetters(t *testing.T, client redis.UniversalClient, topic string) []string {
	t.Helper()
	entries, err := client.XRange(context.Background(), topic+":dead", "-", "+").Result()
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Values[redisbus.StreamsFieldPayload].(string))
	}
	return out
}

func countOf(items []string) map[string]int {
	counts := map[string]int{}
	for _, item := range items {
		counts[item]++
	}
	return counts
}

// A worker restarted again and again while it holds a backlog read ahead:
// no message is dead-lettered that its handler never failed on, and each
// is handled.
func TestStreamsRestartsNeverDeadLetterUnhandledMessages(t *testing.T) {
	for _, stop := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(stop.String(), func(t *testing.T) {
			t.Parallel()
			client := pubsubtest.NewClient(t)
			topic, group := pubsubtest.Topic(t), "workers"
			pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
			require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
			sent := payloads("job-", 40)
			publish(t, pub, topic, sent...)

			env := map[string]string{
				"W_TOPIC": topic, "W_GROUP": group, "W_CONSUMER": "worker-1",
				"W_MAX_DELIVERIES": "3",
				"W_READ_AHEAD":     "1h", // hold the whole backlog
				"W_HANDLER_SLEEP":  "20ms",
				"W_CONSUMER_LEASE": "300ms", // a killed worker's name is free again soon
			}
			var started, handled []string
			for range 4 {
				w := startWorker(t, env)
				require.Eventually(t, func() bool { return len(w.handledPayloads()) >= 3 }, waitTimeout, time.Millisecond)
				w.signal(t, stop)
				w.exited(t)
				started = append(started, w.startedPayloads()...)
				handled = append(handled, w.handledPayloads()...)
			}
			w := startWorker(t, env)
			require.Eventually(t, func() bool {
				done := countOf(append(handled, w.handledPayloads()...))
				for _, p := range sent {
					if done[p] == 0 && !contains(deadLetters(t, client, topic), p) {
						return false
					}
				}
				return true
			}, 2*waitTimeout, 10*time.Millisecond, "every message handled or dead-lettered")
			started = append(started, w.startedPayloads()...)

			starts := countOf(started)
			for _, p := range deadLetters(t, client, topic) {
				assert.GreaterOrEqual(t, starts[p], 3, "%s was dead-lettered after %d deliveries", p, starts[p])
			}
			assert.Empty(t, deadLetters(t, client, topic), "a handler that never fails: nothing to dead-letter")
			if stop == syscall.SIGTERM {
				handled = append(handled, w.handledPayloads()...)
				for p, n := range countOf(handled) {
					assert.Equal(t, 1, n, "%s: a graceful restart handles nothing twice", p)
				}
			}
		})
	}
}

func contains(items []string, item string) bool {
	for _, x := range items {
		if x == item {
			return true
		}
	}
	return false
}

// A message whose handler takes its process down is dead-lettered after
// MaxDeliveries crashes (one more at most: the first delivery of a new
// entry is counted before a handler has it), and the good messages read
// ahead behind it are handled, never dead-lettered with it.
func TestStreamsPoisonMessageCrashingItsProcess(t *testing.T) {
	for _, c := range []struct{ maxInFlight, maxDeliveries int }{{1, 3}, {4, 3}, {4, 1}} {
		maxInFlight, maxDeliveries := c.maxInFlight, c.maxDeliveries
		t.Run(fmt.Sprintf("MaxInFlight %d, MaxDeliveries %d", maxInFlight, maxDeliveries), func(t *testing.T) {
			t.Parallel()
			client := pubsubtest.NewClient(t)
			topic, group := pubsubtest.Topic(t), "workers"
			pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
			require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
			sent := []string{"good-0", "good-1", "poison", "good-2", "good-3", "good-4"}
			publish(t, pub, topic, sent...)

			env := map[string]string{
				"W_TOPIC": topic, "W_GROUP": group, "W_CONSUMER": "worker-1",
				"W_MAX_DELIVERIES": strconv.Itoa(maxDeliveries),
				"W_MAX_IN_FLIGHT":  strconv.Itoa(maxInFlight),
				"W_READ_AHEAD":     "1h",
				"W_CRASH_ON":       "poison",
				"W_CONSUMER_LEASE": "300ms",
			}
			var handled []string
			crashes := 0
			for !contains(deadLetters(t, client, topic), "poison") {
				require.Less(t, crashes, maxDeliveries+3, "the poison message is never dead-lettered")
				w := launchWorker(t, env)
				select {
				case <-w.done: // crashed on the poison message
					crashes++
				case <-time.After(2 * time.Second):
					// Running without crashing: the poison message is gone.
					w.signal(t, syscall.SIGTERM)
					w.exited(t)
				}
				handled = append(handled, w.handledPayloads()...)
			}
			assert.GreaterOrEqual(t, crashes, maxDeliveries, "dead-lettered after MaxDeliveries crashes, not before")
			assert.LessOrEqual(t, crashes, maxDeliveries+1, "at most one crash more than MaxDeliveries")
			assert.Equal(t, []string{"poison"}, deadLetters(t, client, topic), "good messages are never dead-lettered")
			w := startWorker(t, env)
			require.Eventually(t, func() bool {
				done := countOf(append(handled, w.handledPayloads()...))
				return done["good-0"] > 0 && done["good-1"] > 0 && done["good-2"] > 0 && done["good-3"] > 0 && done["good-4"] > 0
			}, waitTimeout, 10*time.Millisecond, "every good message is handled")
			require.Eventually(t, func() bool { return pendingCount(t, client, topic, group) == 0 }, waitTimeout, 10*time.Millisecond)
		})
	}
}

// A worker paused (SIGSTOP) for longer than ClaimMinIdle while it holds
// entries read ahead: another worker claims and handles them; when the
// first resumes, it does not handle them again. Only what its handler had
// when it was paused may be handled twice.
func TestStreamsPausedWorkerDoesNotHandleWhatOthersClaimed(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	sent := payloads("job-", 60)
	publish(t, pub, topic, sent...)

	paused := startWorker(t, map[string]string{
		"W_TOPIC": topic, "W_GROUP": group, "W_CONSUMER": "paused",
		"W_CLAIM_MIN_IDLE": "1s",
		"W_READ_AHEAD":     "1h",
		"W_HANDLER_SLEEP":  "20ms",
		"W_REPORT_HELD":    "1",
	})
	for {
		line := paused.waitFor(t, "held ")
		if n, _ := strconv.Atoi(line[len("held "):]); n >= 50 {
			break
		}
	}
	paused.signal(t, syscall.SIGSTOP)
	pausedAt := len(paused.handledPayloads())

	log := newHandledLog()
	survivor := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: group, Consumer: "survivor", ClaimMinIdle: time.Second,
	}, nil)
	runRouter(t, survivor, topic, func(msg *message.Message) error {
		log.add("survivor", string(msg.Payload))
		return nil
	})
	require.Eventually(t, func() bool {
		return log.count("survivor")+pausedAt >= len(sent)-2
	}, 3*waitTimeout, 10*time.Millisecond, "the survivor claims what the paused worker held")
	assert.Positive(t, survivor.Stats().Claimed)

	paused.signal(t, syscall.SIGCONT)
	// Give it time to hand out what it still holds, as the old code did,
	// then stop it gracefully.
	time.Sleep(1500 * time.Millisecond)
	paused.signal(t, syscall.SIGTERM)
	paused.exited(t)

	twice := 0
	for _, p := range paused.handledPayloads() {
		if log.times(p) > 0 {
			twice++
		}
	}
	assert.LessOrEqual(t, twice, 2, "only the message in flight when the worker was paused may be handled by both")
}

// Two worker processes of one group on one host with the default consumer
// name get distinct names, so that restarting one never makes it take the
// other's messages in flight as its own.
func TestStreamsTwoWorkersOnOneHostGetDistinctNames(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	env := map[string]string{"W_TOPIC": topic, "W_GROUP": group, "W_HANDLER_SLEEP": "10ms"}
	first := startWorker(t, env)
	second := startWorker(t, env)
	sent := payloads("job-", 300)
	publish(t, pub, topic, sent...)

	// Restart the first twice while both work.
	var handled []string
	for range 2 {
		require.Eventually(t, func() bool { return len(first.handledPayloads()) >= 20 }, waitTimeout, time.Millisecond)
		first.signal(t, syscall.SIGTERM)
		first.exited(t)
		handled = append(handled, first.handledPayloads()...)
		first = startWorker(t, env)
	}
	require.Eventually(t, func() bool {
		return len(handled)+len(first.handledPayloads())+len(second.handledPayloads()) >= len(sent)
	}, 3*waitTimeout, 10*time.Millisecond)
	handled = append(handled, first.handledPayloads()...)
	handled = append(handled, second.handledPayloads()...)
	for p, n := range countOf(handled) {
		assert.Equal(t, 1, n, "%s handled %d times", p, n)
	}
	assert.Len(t, countOf(handled), len(sent))

	host, err := os.Hostname()
	require.NoError(t, err)
	consumers, err := client.XInfoConsumers(t.Context(), topic, group).Result()
	require.NoError(t, err)
	var names []string
	for _, c := range consumers {
		names = append(names, c.Name)
	}
	assert.ElementsMatch(t, []string{host, host + "-2"}, names)
}

// An explicit consumer name held by a live process is refused to a second
// one with a clear error; once its holder is killed, the name is free
// after ConsumerLease, and the new process resumes the killed one's
// pending messages at once (ClaimMinIdle is an hour).
func TestStreamsExplicitNameAcrossProcesses(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), "workers"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	env := map[string]string{
		"W_TOPIC": topic, "W_GROUP": group, "W_CONSUMER": "worker-0",
		"W_CONSUMER_LEASE": "1s", "W_CLAIM_MIN_IDLE": "1h", "W_HANDLER_SLEEP": "1h",
	}
	holder := startWorker(t, env)
	publish(t, pub, topic, "stuck")
	require.Eventually(t, func() bool { return len(holder.startedPayloads()) == 1 }, waitTimeout, time.Millisecond)

	twin := launchWorker(t, env)
	line := twin.waitFor(t, "error")
	assert.Contains(t, line, `"worker-0" is in use by another live subscriber`)
	assert.Contains(t, line, "StreamsSubscriberConfig.Consumer")

	require.NoError(t, holder.cmd.Process.Kill())
	holder.exited(t)
	killedAt := time.Now()
	env["W_HANDLER_SLEEP"] = "0s"
	restarted := startWorker(t, env)
	require.Eventually(t, func() bool { return len(restarted.handledPayloads()) == 1 }, waitTimeout, time.Millisecond)
	assert.Less(t, time.Since(killedAt), 5*time.Second, "the lease lapses after ConsumerLease; ClaimMinIdle is an hour")
	restarted.mu.Lock()
	assert.Equal(t, []string{"2"}, restarted.counts, "the killed process had it")
	restarted.mu.Unlock()
}
