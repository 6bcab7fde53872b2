package dedup_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
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
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Timings of the worker processes: a killed worker's message is claimed by
// another after workerClaimMinIdle, by when its claim (workerLease) has
// lapsed, as the defaults have it (30 s and 10 s).
const (
	workerClaimMinIdle = 500 * time.Millisecond
	workerLease        = 200 * time.Millisecond
)

// TestDedupWorkerProcess is a worker of a Streams consumer group, run in a
// process of its own by startDedupWorker; run on its own, it does nothing.
// Its handler's side effect is HINCRBY W_EFFECTS <payload> 1, behind
// W_MODE: "repository" (Watermill's Deduplicator with a Repository),
// "middleware" (the Middleware), or "commit" (the Middleware, the side
// effect through Commit). It prints "ready", "deliver <payload> <delivery
// count>" for every delivery reaching the handler chain, and "hang
// <payload>" when it stops for good in the handler of W_HANG_ON, before or
// after the side effect (W_HANG_AT), if it is the first worker to get there
// (W_HANG_FLAG), to be SIGKILLed.
func TestDedupWorkerProcess(t *testing.T) {
	if os.Getenv("REDISBUS_DEDUP_WORKER") == "" {
		return
	}
	env := os.Getenv
	opt, err := redis.ParseURL(env("REDIS_URL"))
	require.NoError(t, err)
	client := redis.NewClient(opt)
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: env("W_GROUP"), Consumer: env("W_CONSUMER"),
		ClaimMinIdle: workerClaimMinIdle,
	}, nil)
	require.NoError(t, err)
	var out sync.Mutex
	println := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}

	config := dedup.Config{Client: client, Prefix: env("W_PREFIX"), Window: time.Minute, Lease: workerLease}
	var mw message.HandlerMiddleware
	var commit *dedup.Middleware
	switch env("W_MODE") {
	case "repository":
		repo, err := dedup.NewRepository(config)
		require.NoError(t, err)
		mw = (&middleware.Deduplicator{KeyFactory: dedup.UUID, Repository: repo}).Middleware
	case "middleware", "commit":
		m, err := dedup.NewMiddleware(config, nil)
		require.NoError(t, err)
		mw = m.Middleware
		if env("W_MODE") == "commit" {
			commit = m
		}
	}
	effects, hangOn, hangAt := env("W_EFFECTS"), env("W_HANG_ON"), env("W_HANG_AT")
	ctx := context.Background()
	hang := func(payload, at string) {
		if payload == hangOn && at == hangAt && client.SetNX(ctx, env("W_HANG_FLAG"), 1, time.Minute).Val() {
			println("hang %s", payload)
			select {} // until SIGKILL
		}
	}

	router, err := message.NewRouter(message.RouterConfig{}, nil)
	require.NoError(t, err)
	router.AddConsumerHandler("work", env("W_TOPIC"), sub, func(msg *message.Message) error {
		payload := string(msg.Payload)
		hang(payload, "before")
		time.Sleep(2 * time.Millisecond) // the work takes a while, so that the workers share it
		if commit != nil {
			if err := commit.Commit(ctx, msg, func(pipe redis.Pipeliner) error {
				pipe.HIncrBy(ctx, effects, payload, 1)
				return nil
			}); err != nil {
				return err
			}
		} else if err := client.HIncrBy(ctx, effects, payload, 1).Err(); err != nil {
			return err
		}
		hang(payload, "after")
		return nil
	}).AddMiddleware(func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			println("deliver %s %s", msg.Payload, msg.Metadata.Get(redisbus.MetadataDeliveryCount))
			return h(msg)
		}
	}, mw)
	go func() {
		if err := router.Run(ctx); err != nil {
			println("error %v", err)
			os.Exit(4)
		}
	}()
	<-router.Running()
	println("ready")
	select {} // until killed
}

// dedupWorker is a running TestDedupWorkerProcess.
type dedupWorker struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// workerLine is a line a worker printed.
type workerLine struct {
	worker *dedupWorker
	text   string
}

// startDedupWorker starts a worker process that sends its lines to lines,
// and waits until it subscribed.
func startDedupWorker(t *testing.T, env map[string]string, lines chan<- workerLine) *dedupWorker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDedupWorkerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "REDISBUS_DEDUP_WORKER=1", "REDIS_URL="+pubsubtest.Redis(t).URL)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	w := &dedupWorker{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(w.done)
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if scanner.Text() == "ready" {
				close(ready)
				continue
			}
			lines <- workerLine{w, scanner.Text()}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-w.done
	})
	select {
	case <-ready:
	case <-w.done:
		t.Fatal("worker exited before it was ready")
	case <-time.After(waitTimeout):
		t.Fatal("worker not ready")
	}
	return w
}

// The test: a group of worker processes consumes a stream with
// at-least-once delivery; one is SIGKILLed in the middle of a message's
// work, before or after its side effect; redisbus redelivers that message
// to another worker. How often each message's side effect happened, with
// each kind of deduplication in front of it:
//
//   - the Middleware with Commit (side effect and mark in one
//     transaction): once, wherever the kill falls;
//   - the Middleware: once when killed before the side effect, twice when
//     killed after it (the mark comes at the ack): never lost;
//   - Watermill's Deduplicator with Repository: once when killed after the
//     side effect, never when killed before it (the redelivery is dropped):
//     lost.
//
// Every other message's side effect happens once in every case.
func TestEachSideEffectOnceAcrossWorkersWhenOneIsKilled(t *testing.T) {
	for _, tc := range []struct {
		mode, at string
		want     int // side effects of the message being handled at the kill
	}{
		{"commit", "before", 1},
		{"commit", "after", 1},
		{"middleware", "before", 1},
		{"middleware", "after", 2},
		{"repository", "after", 1},
		{"repository", "before", 0},
	} {
		t.Run(tc.mode+" killed "+tc.at+" the side effect", func(t *testing.T) {
			runKilledWorkerGroup(t, tc.mode, tc.at, tc.want)
		})
	}
}

func runKilledWorkerGroup(t *testing.T, mode, at string, want int) {
	const messages, workers, victim = 30, 3, "m-10"
	client := pubsubtest.NewClient(t)
	ctx := t.Context()
	topic, group, prefix := pubsubtest.Topic(t), "workers", pubsubtest.Topic(t)+":"
	effects := prefix + "effects"
	require.NoError(t, client.XGroupCreateMkStream(ctx, topic, group, "0").Err())
	t.Cleanup(func() {
		keys, _ := client.Keys(context.Background(), prefix+"*").Result()
		_ = client.Del(context.Background(), append(keys, topic)...).Err()
	})

	lines := make(chan workerLine, 1024)
	for i := range workers {
		startDedupWorker(t, map[string]string{
			"W_TOPIC": topic, "W_GROUP": group, "W_CONSUMER": "worker-" + strconv.Itoa(i),
			"W_MODE": mode, "W_PREFIX": prefix, "W_EFFECTS": effects,
			"W_HANG_ON": victim, "W_HANG_AT": at, "W_HANG_FLAG": prefix + "hung",
		}, lines)
	}
	pub := newStreamsPublisher(t, client)
	for i := range messages {
		require.NoError(t, pub.Publish(topic, newMessage(fmt.Sprintf("m-%02d", i))))
	}

	// The worker that hangs on the victim is SIGKILLed; another gets the
	// message again.
	var killed *dedupWorker
	deliveries := map[string][]string{} // payload → delivery counts
	handlers := map[*dedupWorker]bool{}
	redelivered := false
	deadline := time.After(2 * waitTimeout)
	for !redelivered || !settled(t, client, topic, group) {
		select {
		case line := <-lines:
			switch fields := strings.Fields(line.text); fields[0] {
			case "hang":
				require.Nil(t, killed, "one worker hangs")
				killed = line.worker
				require.NoError(t, killed.cmd.Process.Kill()) // SIGKILL: no Close, no ack
			case "deliver":
				deliveries[fields[1]] = append(deliveries[fields[1]], fields[2])
				handlers[line.worker] = true
				if fields[1] == victim && fields[2] != "1" && line.worker != killed {
					redelivered = true
				}
			default:
				t.Fatalf("a worker printed %q", line.text)
			}
		case <-time.After(20 * time.Millisecond): // settled is not an event: look again
		case <-deadline:
			t.Fatalf("not settled: redelivered %v, deliveries %v", redelivered, deliveries)
		}
	}
	require.NotNil(t, killed, "a worker was killed")
	<-killed.done
	assert.Len(t, handlers, workers, "every worker took messages")

	counts, err := client.HGetAll(ctx, effects).Result()
	require.NoError(t, err)
	for i := range messages {
		payload := fmt.Sprintf("m-%02d", i)
		expected := 1
		if payload == victim {
			expected = want
		}
		n, _ := strconv.Atoi(counts[payload])
		assert.Equal(t, expected, n, "side effects of %s (deliveries %v)", payload, deliveries[payload])
	}
}

// settled reports whether the group has every entry of the stream read
// and acked.
func settled(t *testing.T, client *redis.Client, topic, group string) bool {
	groups, err := client.XInfoGroups(t.Context(), topic).Result()
	require.NoError(t, err)
	return len(groups) == 1 && groups[0].Pending == 0 && groups[0].Lag == 0
}
