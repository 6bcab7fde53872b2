package redisbus_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// TestStreamsWorkerProcess is a Streams worker as people run one: a Router
// over a StreamsSubscriber, in a process of its own, configured through
// the environment by startWorker. Run on its own, it does nothing.
//
// It prints "ready" once subscribed (or "error <why>" and exits),
// "start <payload>" when a handler gets a message, "handled <payload>
// <delivery count>" for every message it acks, and, with W_REPORT_HELD,
// "held <n>" whenever the number of entries it holds changes. W_CRASH_ON
// makes it exit at once, without Close, when a handler gets that payload.
// SIGTERM closes it gracefully.
func TestStreamsWorkerProcess(t *testing.T) {
	if os.Getenv("REDISBUS_WORKER") == "" {
		return
	}
	env := func(key string) string { return os.Getenv(key) }
	duration := func(key string) time.Duration {
		d, _ := time.ParseDuration(env(key))
		return d
	}
	number := func(key string) int {
		n := 0
		fmt.Sscan(env(key), &n)
		return n
	}
	opt, err := redis.ParseURL(env("REDIS_URL"))
	require.NoError(t, err)
	client := redis.NewClient(opt)
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client:        client,
		ConsumerGroup: env("W_GROUP"),
		Consumer:      env("W_CONSUMER"),
		ClaimMinIdle:  duration("W_CLAIM_MIN_IDLE"),
		ConsumerLease: duration("W_CONSUMER_LEASE"),
		MaxDeliveries: number("W_MAX_DELIVERIES"),
		ReadAhead:     duration("W_READ_AHEAD"),
		Prefetch:      number("W_PREFETCH"),
		MaxInFlight:   number("W_MAX_IN_FLIGHT"),
	}, nil)
	require.NoError(t, err)

	var out sync.Mutex
	println := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, nil)
	require.NoError(t, err)
	sleepFor, crashOn := duration("W_HANDLER_SLEEP"), env("W_CRASH_ON")
	router.AddConsumerHandler("work", env("W_TOPIC"), sub, func(msg *message.Message) error {
		println("start %s", msg.Payload)
		if crashOn != "" && string(msg.Payload) == crashOn {
			os.Exit(3) // a handler that takes its process down: no Close, no ack
		}
		time.Sleep(sleepFor)
		println("handled %s %s", msg.Payload, msg.Metadata.Get(redisbus.MetadataDeliveryCount))
		return nil
	})
	go func() {
		if err := router.Run(context.Background()); err != nil {
			println("error %v", err)
			os.Exit(4)
		}
	}()
	<-router.Running()
	println("ready")

	if env("W_REPORT_HELD") != "" {
		go func() {
			last := -1
			for {
				if held := sub.Stats().Held; held != last {
					println("held %d", held)
					last = held
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
	require.NoError(t, router.Close())
	require.NoError(t, sub.Close())
	println("closed")
	os.Exit(0)
}

// workerProcess is a running TestStreamsWorkerProcess.
type workerProcess struct {
	cmd   *exec.Cmd
	lines chan string // every line but "handled" ones
	done  chan struct{}

	mu      sync.Mutex
	handled []string // payloads, in order
	counts  []string // their delivery counts
	started []string // payloads handlers got, in order
}

// startWorker starts a worker process with the given W_ settings on the
// shared Redis (or the one REDIS_URL in env names) and waits until it
// subscribed.
func startWorker(t *testing.T, env map[string]string) *workerProcess {
	t.Helper()
	w := launchWorker(t, env)
	w.waitFor(t, "ready")
	return w
}

// launchWorker starts a worker process without waiting for it.
func launchWorker(t *testing.T, env map[string]string) *workerProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStreamsWorkerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "REDISBUS_WORKER=1", "REDIS_URL="+pubsubtest.Redis(t).URL)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	w := &workerProcess{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			line := scanner.Text()
			if payload, ok := strings.CutPrefix(line, "start "); ok {
				w.mu.Lock()
				w.started = append(w.started, payload)
				w.mu.Unlock()
				continue
			}
			if rest, ok := strings.CutPrefix(line, "handled "); ok {
				payload, count, _ := strings.Cut(rest, " ")
				w.mu.Lock()
				w.handled = append(w.handled, payload)
				w.counts = append(w.counts, count)
				w.mu.Unlock()
				continue
			}
			select {
			case w.lines <- line:
			default: // nobody asked for it
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-w.done
	})
	return w
}

// waitFor returns the first line starting with prefix.
func (w *workerProcess) waitFor(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(2 * waitTimeout)
	for {
		select {
		case line := <-w.lines:
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-w.done:
			t.Fatalf("worker exited before printing %q", prefix)
		case <-timeout:
			t.Fatalf("worker did not print %q", prefix)
		}
	}
}

func (w *workerProcess) handledPayloads() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.handled...)
}

func (w *workerProcess) startedPayloads() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.started...)
}

// exited waits for the process to end.
func (w *workerProcess) exited(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(2 * waitTimeout):
		t.Fatal("worker did not exit")
	}
}

func (w *workerProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(sig))
}
