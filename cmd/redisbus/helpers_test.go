package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// binary is the console, built once for the package's tests: they run it
// as operators do, for its exit codes and output.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "redisbus-console-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "redisbus")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the console: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// env is a private redis-server, or Redis Cluster, and a client of it.
type env struct {
	t      *testing.T
	url    string // for the console
	client redis.UniversalClient
}

func newEnv(t *testing.T) *env {
	t.Helper()
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	return &env{t: t, url: server.URL, client: server.Client(t)}
}

// newClusterEnv starts a Redis Cluster of three masters; the console is
// given one node's URL.
func newClusterEnv(t *testing.T) *env {
	t.Helper()
	cluster := pubsubtest.StartCluster(t, 3)
	return &env{t: t, url: "redis://" + cluster.Addrs[0], client: cluster.Client(t)}
}

// with returns the env for a subtest t.
func (e *env) with(t *testing.T) *env {
	return &env{t: t, url: e.url, client: e.client}
}

// result is what one run of the console did.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the console against the env's Redis with stdin as its input.
func (e *env) run(stdin string, args ...string) result {
	e.t.Helper()
	return runConsole(e.t, stdin, append([]string{"--redis", e.url}, args...)...)
}

func runConsole(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "REDIS_URL=") // only what the test passes
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errorsAs(err, &exit) {
		t.Fatalf("running %v: %v", args, err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*target = e
	return ok
}

// ok runs the console and requires exit code 0.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run("", args...)
	require.Equal(e.t, 0, r.code, "redisbus %v\nstdout: %s\nstderr: %s", args, r.stdout, r.stderr)
	return r.stdout
}

// okJSON runs the console with --json and decodes its output into v.
func (e *env) okJSON(v any, args ...string) {
	e.t.Helper()
	out := e.ok(append(args, "--json")...)
	require.NoError(e.t, json.Unmarshal([]byte(out), v), "output: %s", out)
}

// published is a message as the test published it.
type published struct {
	uuid, payload string
	metadata      map[string]string
}

// deadLetters publishes n messages to topic with redisbus' StreamsPublisher
// and has a StreamsSubscriber of group "workers" whose handler always
// fails, with MaxDeliveries 1, move every one of them to topic:dead. It
// returns the messages by UUID and the subscriber, still open (its
// consumer-name lease is in Redis until it closes).
func (e *env) deadLetters(topic string, n int) (map[string]published, *redisbus.StreamsSubscriber) {
	e.t.Helper()
	logger := watermill.NopLogger{}
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: e.client}, logger)
	require.NoError(e.t, err)
	defer pub.Close()
	msgs := make(map[string]published, n)
	batch := make([]*message.Message, 0, n)
	for i := range n {
		msg := message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprintf(`{"order":%d}`, i)))
		msg.Metadata.Set("tenant", fmt.Sprintf("t%d", i%3))
		msgs[msg.UUID] = published{uuid: msg.UUID, payload: string(msg.Payload), metadata: map[string]string{"tenant": msg.Metadata.Get("tenant")}}
		batch = append(batch, msg)
	}
	require.NoError(e.t, pub.Publish(topic, batch...))

	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client:          e.client,
		ConsumerGroup:   "workers",
		Consumer:        "worker-1",
		MaxDeliveries:   1,
		MaxInFlight:     256,
		NackResendDelay: -1,
	}, logger)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(e.t, err)
	go func() {
		for msg := range ch {
			msg.Nack() // the handler always fails
		}
	}()
	require.Eventually(e.t, func() bool {
		return e.client.XLen(context.Background(), topic+":dead").Val() == int64(n)
	}, 30*time.Second, 5*time.Millisecond, "dead letters of %s", topic)
	return msgs, sub
}

// uuids returns the message UUIDs of stream's entries, and how often each
// occurs.
func (e *env) uuids(stream string) map[string]int {
	e.t.Helper()
	entries, err := e.client.XRange(context.Background(), stream, "-", "+").Result()
	require.NoError(e.t, err)
	seen := make(map[string]int, len(entries))
	for _, entry := range entries {
		seen[entry.Values[redisbus.StreamsFieldUUID].(string)]++
	}
	return seen
}

// readGroup creates group on stream (from its start) and has consumer
// read count entries, which stay pending.
func (e *env) readGroup(stream, group, consumer string, count int64) []string {
	e.t.Helper()
	ctx := context.Background()
	require.NoError(e.t, e.client.XGroupCreate(ctx, stream, group, "0").Err())
	read, err := e.client.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: []string{stream, ">"}, Count: count,
	}).Result()
	require.NoError(e.t, err)
	ids := make([]string, len(read[0].Messages))
	for i, m := range read[0].Messages {
		ids[i] = m.ID
	}
	return ids
}

// xadd adds an entry with the given field, value pairs to stream.
func (e *env) xadd(stream string, fieldsAndValues ...string) string {
	e.t.Helper()
	values := make([]any, len(fieldsAndValues))
	for i, v := range fieldsAndValues {
		values[i] = v
	}
	id, err := e.client.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: values}).Result()
	require.NoError(e.t, err)
	return id
}
