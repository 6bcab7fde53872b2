package dedup_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// A key one process checked is a duplicate for every other process (each
// here with a client of its own), until the window ends.
func TestRepositoryDropsWhatAnyProcessChecked(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	config.Window = time.Minute
	one := newRepository(t, config)
	config.Client = pubsubtest.NewClient(t)
	other := newRepository(t, config)

	duplicate, err := one.IsDuplicate(t.Context(), "order-1")
	require.NoError(t, err)
	assert.False(t, duplicate, "first seen")
	for _, repo := range []*dedup.Repository{other, one} {
		duplicate, err = repo.IsDuplicate(t.Context(), "order-1")
		require.NoError(t, err)
		assert.True(t, duplicate, "seen before")
	}
	duplicate, err = other.IsDuplicate(t.Context(), "order-2")
	require.NoError(t, err)
	assert.False(t, duplicate)
	assert.Equal(t, dedup.RepositoryStats{Checks: 2, Duplicates: 1}, one.Stats())

	ttl, err := config.Client.PTTL(t.Context(), config.Prefix+"order-1").Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 50*time.Second, "the mark lasts the window")
	assert.LessOrEqual(t, ttl, time.Minute)
}

// After the window a key is new again.
func TestRepositoryForgetsAfterTheWindow(t *testing.T) {
	config := testConfig(t, pubsubtest.NewClient(t))
	config.Window = 20 * time.Millisecond
	repo := newRepository(t, config)
	duplicate, err := repo.IsDuplicate(t.Context(), "k")
	require.NoError(t, err)
	require.False(t, duplicate)
	eventually(t, "the mark expires", func() bool {
		return config.Client.Exists(t.Context(), config.Prefix+"k").Val() == 0
	})
	duplicate, err = repo.IsDuplicate(t.Context(), "k")
	require.NoError(t, err)
	assert.False(t, duplicate)
}

// Of many processes checking one key at the same moment, exactly one sees
// it new.
func TestRepositoryHasOneWinnerAmongConcurrentChecks(t *testing.T) {
	config := testConfig(t, nil)
	var firsts atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		config.Client = pubsubtest.NewClient(t)
		repo := newRepository(t, config)
		for range 25 {
			wg.Go(func() {
				duplicate, err := repo.IsDuplicate(t.Context(), "contended")
				assert.NoError(t, err)
				if !duplicate {
					firsts.Add(1)
				}
			})
		}
	}
	wg.Wait()
	assert.Equal(t, int64(1), firsts.Load())
}

// A check whose reply was lost is sent again by go-redis, after Redis ran
// the first one. A plain SET NX would then find the first attempt's mark
// and call the message a duplicate of itself, and the message would be
// dropped, never handled. The token in the mark tells the retry it is its
// own.
func TestRepositoryCheckRetriedAfterALostReplyIsNotADuplicate(t *testing.T) {
	proxy, client := clientBehindProxy(t, 0)
	config := testConfig(t, client)
	repo := newRepository(t, config)
	_, err := repo.IsDuplicate(t.Context(), "warm-up") // opens the connection that turns slow
	require.NoError(t, err)
	proxy.DelayOpenConnections(700 * time.Millisecond)

	duplicate, err := repo.IsDuplicate(t.Context(), "k")
	require.NoError(t, err, "go-redis sent it again on a new connection")
	assert.False(t, duplicate, "the retry found its own first attempt's mark")

	duplicate, err = repo.IsDuplicate(t.Context(), "k")
	require.NoError(t, err)
	assert.True(t, duplicate)
}

// A check that fails (here: Redis stops answering within the context)
// deletes the mark it may have made, so that the message's redelivery is
// handled rather than dropped for a check that never answered.
func TestRepositoryCheckThatFailsLeavesNoMark(t *testing.T) {
	proxy, client := clientBehindProxy(t, -1)
	config := testConfig(t, client)
	repo := newRepository(t, config)
	_, err := repo.IsDuplicate(t.Context(), "warm-up")
	require.NoError(t, err)
	proxy.DelayOpenConnections(700 * time.Millisecond)

	_, err = repo.IsDuplicate(t.Context(), "k")
	require.Error(t, err, "no retries: the lost reply is the caller's error")
	assert.Equal(t, uint64(1), repo.Stats().Errors)
	// The SET ran in Redis; the undo, on a new connection, deleted it.
	assert.Equal(t, int64(0), pubsubtest.NewClient(t).Exists(t.Context(), config.Prefix+"k").Val())
	duplicate, err := repo.IsDuplicate(t.Context(), "k")
	require.NoError(t, err)
	assert.False(t, duplicate, "the redelivery is handled")
}

// Keys are bounded whatever a message carries: long ones and ones with a
// brace (which could pick a Redis Cluster slot) are hashed, and still told
// apart.
func TestRepositoryBoundsHostileKeys(t *testing.T) {
	client := pubsubtest.NewClient(t)
	config := testConfig(t, client)
	repo := newRepository(t, config)
	long := strings.Repeat("k", 1<<20)
	for _, k := range []string{long, long + "!", "{tag}x", "{tag}y"} {
		duplicate, err := repo.IsDuplicate(t.Context(), k)
		require.NoError(t, err)
		assert.False(t, duplicate, "%.10q… is new", k)
		duplicate, err = repo.IsDuplicate(t.Context(), k)
		require.NoError(t, err)
		assert.True(t, duplicate, "%.10q… was seen", k)
	}
	keys, err := client.Keys(t.Context(), config.Prefix+"*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 4)
	for _, k := range keys {
		assert.LessOrEqual(t, len(k), len(config.Prefix)+128)
		assert.NotContains(t, k[len(config.Prefix):], "{")
	}
}

// An invalid Config is refused with a *redisbus.ConfigError naming the
// field.
func TestConfigErrorsNameTheField(t *testing.T) {
	client := pubsubtest.NewClient(t)
	for field, config := range map[string]dedup.Config{
		"dedup.Config.Client": {},
		"dedup.Config.Window": {Client: client, Window: time.Microsecond},
		"dedup.Config.Lease":  {Client: client, Lease: -time.Second},
	} {
		_, err := dedup.NewRepository(config)
		var configErr *redisbus.ConfigError
		require.ErrorAs(t, err, &configErr, field)
		assert.Equal(t, field, configErr.Field)
		_, err = dedup.NewMiddleware(config, nil)
		require.ErrorAs(t, err, &configErr, field)
		_, err = dedup.NewPublisher(nopPublisher{}, config, nil)
		require.ErrorAs(t, err, &configErr, field)
	}
}
