package dedup_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

// waitTimeout bounds every wait for something that should happen at once on
// loopback; it is only reached when the code under test is broken.
const waitTimeout = 10 * time.Second

// testConfig is a Config on client whose keys are the test's own.
func testConfig(t *testing.T, client redis.UniversalClient) dedup.Config {
	return dedup.Config{Client: client, Prefix: pubsubtest.Topic(t) + ":"}
}

// clientBehindProxy returns a client of the test Redis through a proxy
// that can delay replies, with a read timeout (200 ms) short enough for a
// test to make go-redis give a reply up, and maxRetries as go-redis takes
// it (0: its default, -1: none).
func clientBehindProxy(t *testing.T, maxRetries int) (*pubsubtest.Proxy, *redis.Client) {
	t.Helper()
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 200 * time.Millisecond, MaxRetries: maxRetries})
	t.Cleanup(func() { _ = client.Close() })
	return proxy, client
}

func newMessage(payload string) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(payload))
}

// eventually waits until cond holds, checking every few milliseconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newRepository(t *testing.T, config dedup.Config) *dedup.Repository {
	t.Helper()
	repo, err := dedup.NewRepository(config)
	require.NoError(t, err)
	return repo
}
