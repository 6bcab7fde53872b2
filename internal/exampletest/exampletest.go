// Package exampletest checks the one-shot programs in examples/: they
// print the same, expected lines on every run and leave nothing behind.
package exampletest

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Run is an example's run: it does its work against the Redis at redisURL
// (an embedded one when redisURL is empty) and prints to out.
type Run func(ctx context.Context, out io.Writer, redisURL string) error

// SameOutputEveryRun runs the example twice against one Redis (REDIS_URL,
// or the tests' private redis-server) and twice on its embedded Redis, and
// asserts that each run printed want exactly. Afterwards the shared Redis
// must hold no key matching leftover (a KEYS pattern naming what the
// example creates).
func SameOutputEveryRun(t *testing.T, run Run, want, leftover string) {
	t.Run("REDIS_URL", func(t *testing.T) {
		server := pubsubtest.Redis(t)
		for nth := 1; nth <= 2; nth++ {
			assertRun(t, run, server.URL, want, nth)
		}
		keys, err := server.Client(t).Keys(t.Context(), leftover).Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "the runs delete what they made")
	})
	t.Run("embedded Redis", func(t *testing.T) {
		for nth := 1; nth <= 2; nth++ {
			assertRun(t, run, "", want, nth)
		}
	})
}

func assertRun(t *testing.T, run Run, redisURL, want string, nth int) {
	t.Helper()
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, redisURL), "run %d", nth)
	assert.Equal(t, want, out.String(), "run %d", nth)
}
