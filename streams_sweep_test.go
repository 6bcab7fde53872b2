package redisbus_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Every combination of the knobs that shape reading and handing out, with
// one to three workers of a group and the handlers people write: each
// message is handled (acked) exactly once, and the work finishes within a
// bound that scales with it.
func TestStreamsConfigurationSweep(t *testing.T) {
	const messages = 24
	type handlerKind struct {
		name string
		// work is how long one message keeps a handler busy.
		work time.Duration
	}
	handlers := []handlerKind{
		{"fast", 0},
		{"20ms", 20 * time.Millisecond},
		{"nack once then ack", 0},
		{"ack from another goroutine", time.Millisecond},
	}
	for _, prefetch := range []int{1, 2, 0} {
		for _, batch := range []int{1, 0} {
			for _, maxInFlight := range []int{1, 4} {
				for consumers := 1; consumers <= 3; consumers++ {
					for _, h := range handlers {
						name := fmt.Sprintf("Prefetch=%d/ReadBatchSize=%d/MaxInFlight=%d/consumers=%d/%s", prefetch, batch, maxInFlight, consumers, h.name)
						t.Run(name, func(t *testing.T) {
							t.Parallel()
							runSweepCase(t, redisbus.StreamsSubscriberConfig{
								ConsumerGroup:   "g",
								Prefetch:        prefetch,
								ReadBatchSize:   batch,
								MaxInFlight:     maxInFlight,
								NackResendDelay: 10 * time.Millisecond,
							}, consumers, h.name, messages,
								// Generous: every message one after the other, nacks
								// and their delay included, plus start-up.
								5*time.Second+messages*(h.work+30*time.Millisecond))
						})
					}
				}
			}
		}
	}
}

func runSweepCase(t *testing.T, config redisbus.StreamsSubscriberConfig, consumers int, handler string, n int, bound time.Duration) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	config.Client = client
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})

	log := newHandledLog()
	var mu sync.Mutex
	failedOnce := map[string]bool{}
	errNackOnce := errors.New("first attempt fails")
	for i := range consumers {
		worker := fmt.Sprintf("worker-%d", i)
		sub := newStreamsSubscriber(t, config, nil)
		if handler == "ack from another goroutine" {
			ch, err := sub.Subscribe(t.Context(), topic)
			require.NoError(t, err)
			go func() {
				for msg := range ch {
					go func() {
						time.Sleep(time.Millisecond)
						log.add(worker, string(msg.Payload))
						msg.Ack()
					}()
				}
			}()
			continue
		}
		runRouter(t, sub, topic, func(msg *message.Message) error {
			switch handler {
			case "20ms":
				time.Sleep(20 * time.Millisecond)
			case "nack once then ack":
				mu.Lock()
				first := !failedOnce[string(msg.Payload)]
				failedOnce[string(msg.Payload)] = true
				mu.Unlock()
				if first {
					return errNackOnce
				}
			}
			log.add(worker, string(msg.Payload))
			return nil
		})
	}

	start := time.Now()
	sent := payloads("m", n)
	publish(t, pub, topic, sent...)
	log.waitAll(t, sent, bound)
	took := time.Since(start)
	assert.Empty(t, log.duplicates(), "handled more than once")
	assert.Less(t, took, bound)
	require.Eventually(t, func() bool { return pendingCount(t, client, topic, "g") == 0 }, waitTimeout, 10*time.Millisecond,
		"every message acked in Redis")
}
