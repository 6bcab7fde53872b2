package redisbus_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strconv"
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

const crashClaimMinIdle = time.Second

// TestStreamsCrashVictimProcess is the consumer that
// TestStreamsDeadConsumersEntriesAreClaimed runs in a process of its own
// and kills; run on its own, it does nothing.
func TestStreamsCrashVictimProcess(t *testing.T) {
	if os.Getenv("REDISBUS_CRASH_VICTIM") == "" {
		return
	}
	opt, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	require.NoError(t, err)
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client:        redis.NewClient(opt),
		ConsumerGroup: os.Getenv("VICTIM_GROUP"),
		Consumer:      "victim",
		ClaimMinIdle:  crashClaimMinIdle,
		MaxInFlight:   5,
		Prefetch:      20,
	}, nil)
	require.NoError(t, err)
	ch, err := sub.Subscribe(context.Background(), os.Getenv("VICTIM_TOPIC"))
	require.NoError(t, err)
	for range 5 {
		<-ch // taken, never acked
	}
	os.Stdout.WriteString("holding\n")
	select {} // until SIGKILL
}

func TestStreamsDeadConsumersEntriesAreClaimed(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic, group := pubsubtest.Topic(t), pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	var sent []string
	for i := range 50 {
		sent = append(sent, strconv.Itoa(i))
	}
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, group, "0").Err())
	published := publish(t, pub, topic, sent...)

	victim := exec.Command(os.Args[0], "-test.run=^TestStreamsCrashVictimProcess$", "-test.count=1")
	victim.Env = append(os.Environ(),
		"REDISBUS_CRASH_VICTIM=1",
		"REDIS_URL="+pubsubtest.Redis(t).URL,
		"VICTIM_TOPIC="+topic,
		"VICTIM_GROUP="+group)
	stdout, err := victim.StdoutPipe()
	require.NoError(t, err)
	victim.Stderr = os.Stderr
	require.NoError(t, victim.Start())
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && lines.Text() != "holding" {
	}
	require.Equal(t, "holding", lines.Text(), "the victim process did not start consuming")

	require.NoError(t, victim.Process.Kill()) // SIGKILL: no Close, no acks
	_, _ = victim.Process.Wait()
	killedAt := time.Now()

	held, err := client.XPendingExt(t.Context(), &redis.XPendingExtArgs{Stream: topic, Group: group, Start: "-", End: "+", Count: 100, Consumer: "victim"}).Result()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(held), 5)
	victimHeld := map[string]bool{}
	for _, p := range held {
		victimHeld[p.ID] = true
	}

	survivor := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: group, Consumer: "survivor", ClaimMinIdle: crashClaimMinIdle,
	}, nil)
	ch, err := survivor.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	received := map[string]int{}
	var lastClaimed time.Time
	for len(received) < len(published) {
		msg := next(t, ch)
		received[msg.UUID]++
		if victimHeld[msg.Metadata.Get(redisbus.MetadataStreamID)] {
			lastClaimed = time.Now()
			assert.Equal(t, "2", msg.Metadata.Get(redisbus.MetadataDeliveryCount))
		}
		msg.Ack()
	}
	for _, msg := range published {
		assert.Equal(t, 1, received[msg.UUID], "message %s: the victim acked nothing, so each arrives once", msg.Payload)
	}
	assert.Equal(t, uint64(len(victimHeld)), survivor.Stats().Claimed)
	assert.Less(t, lastClaimed.Sub(killedAt), crashClaimMinIdle+3*time.Second,
		"the dead consumer's entries must arrive within ClaimMinIdle and a margin")
}

// Redis writes the AOF before it replies, so a killed redis-server keeps
// everything acknowledged whether it fsyncs every write, every second
// or leaves it to the OS (what they risk is the machine failing, which no
// test here does).
func TestStreamsNothingAcknowledgedIsLostWhenRedisCrashes(t *testing.T) {
	for _, fsync := range []string{"always", "everysec", "no"} {
		t.Run("appendfsync "+fsync, func(t *testing.T) { nothingAcknowledgedIsLostWhenRedisCrashes(t, fsync) })
	}
}

func nothingAcknowledgedIsLostWhenRedisCrashes(t *testing.T, fsync string) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{AOF: true, AppendFsync: fsync})
	client := server.Client(t)
	topic, group := pubsubtest.Topic(t), "g"
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})
	// No claims: whatever a crash leaves pending with the consumer must come
	// back by reading its own pending list, not after ClaimMinIdle.
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, ConsumerGroup: group, ClaimMinIdle: time.Hour}, nil)
	ch, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)

	const total, publishers = 3000, 8
	var mu sync.Mutex
	acknowledged := map[string]bool{}
	var count atomic.Int64
	crashed := make(chan struct{})
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for count.Load() < total {
				msg := message.NewMessage(watermill.NewUUID(), []byte("order"))
				if err := pub.Publish(topic, msg); err != nil {
					time.Sleep(20 * time.Millisecond) // Redis is down: retry, as an application would
					continue
				}
				mu.Lock()
				acknowledged[msg.UUID] = true
				mu.Unlock()
				if count.Add(1) == total/3 {
					close(crashed)
				}
			}
		})
	}

	published := make(chan struct{})
	go func() { wg.Wait(); close(published) }()

	received := map[string]bool{}
	deadline := time.After(30 * time.Second)
	publishing := published
	for {
		mu.Lock()
		missing := 0
		for id := range acknowledged {
			if !received[id] {
				missing++
			}
		}
		mu.Unlock()
		if publishing == nil && missing == 0 {
			break
		}
		select {
		case <-publishing:
			publishing = nil // all acknowledged now: receive what is missing
		case <-crashed:
			server.Kill(t) // SIGKILL under load
			server.Start(t)
			crashed = nil
		case msg := <-ch:
			received[msg.UUID] = true
			msg.Ack()
		case <-deadline:
			t.Fatalf("%d acknowledged messages never arrived", missing)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id := range acknowledged {
		assert.True(t, received[id], "acknowledged message %s lost", id)
	}
	assert.GreaterOrEqual(t, len(acknowledged), total)
}
