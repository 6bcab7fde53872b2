package redisbus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// recordingHook notes each command it sees, as an instrumentation hook
// (redisotel, say) would trace it.
type recordingHook struct {
	mu   sync.Mutex
	seen map[redis.Cmder]int
	runs map[string]int
}

func (h *recordingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *recordingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.seen[cmd]++
		h.runs[cmd.Name()]++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *recordingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		for _, cmd := range cmds {
			h.seen[cmd]++
			h.runs[cmd.Name()]++
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *recordingHook) count(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runs[name]
}

// The hooks on the client a StreamsSubscriber is given see every command it
// sends, including the blocking reads, claims and takes it runs on the
// client it makes from that one, each exactly once.
func TestClientHooksSeeTheSubscribersOwnCommands(t *testing.T) {
	t.Run("Redis", func(t *testing.T) {
		t.Parallel()
		hooksSeeTheSubscribersOwnCommands(t, pubsubtest.StartServer(t, pubsubtest.ServerOptions{}).Client(t))
	})
	t.Run("Redis Cluster", func(t *testing.T) {
		t.Parallel()
		hooksSeeTheSubscribersOwnCommands(t, pubsubtest.StartCluster(t, 3).Client(t))
	})
}

func hooksSeeTheSubscribersOwnCommands(t *testing.T, client redis.UniversalClient) {
	hook := &recordingHook{seen: map[redis.Cmder]int{}, runs: map[string]int{}}
	client.AddHook(hook)
	topic := pubsubtest.Topic(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: client})

	// An entry left pending by a consumer that is gone: claimed.
	publish(t, pub, topic, "orphan")
	require.NoError(t, client.XGroupCreate(t.Context(), topic, "g", "0").Err())
	require.NoError(t, client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: "g", Consumer: "gone", Streams: []string{topic, ">"}}).Err())

	group := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "g", ClaimMinIdle: 10 * time.Millisecond,
	}, nil)
	fanOut := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{Client: client, StartID: "0"}, nil)
	grouped, err := group.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	all, err := fanOut.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	publish(t, pub, topic, "new")

	assert.ElementsMatch(t, []string{"orphan", "new"}, receive(t, grouped, 2))
	assert.Equal(t, []string{"orphan", "new"}, receive(t, all, 2))
	require.NoError(t, group.Close())
	require.NoError(t, fanOut.Close())

	for _, name := range []string{"xreadgroup", "xautoclaim", "xread", "xack"} {
		assert.Positive(t, hook.count(name), "the client's hooks never saw %s", name)
	}
	assert.Positive(t, hook.count("evalsha")+hook.count("eval"), "the client's hooks never saw the scripts")
	hook.mu.Lock()
	defer hook.mu.Unlock()
	for cmd, times := range hook.seen {
		assert.Equal(t, 1, times, "the hooks saw %v more than once", cmd.Args())
	}
}
