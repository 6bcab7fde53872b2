package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

const wantOutput = `send-confirmation: emailed ada about order 1
send-confirmation: emailed grace about order 2
send-confirmation: emailed linus about order 3
sales-report: order 1 adds 10.00
sales-report: order 2 adds 20.00
sales-report: order 3 adds 30.00
both handlers saw all 3 events
`

// Run twice against one Redis, the example prints the same lines: each run
// has topics and groups of its own, and deletes them.
func TestEveryRunEveryHandlerSeesEveryEvent(t *testing.T) {
	t.Run("REDIS_URL", func(t *testing.T) {
		server := pubsubtest.Redis(t)
		for nth := 1; nth <= 2; nth++ {
			assertRun(t, server.URL, nth)
		}
		keys, err := server.Client(t).Keys(t.Context(), "*cqrs-example:*").Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "the runs delete the streams they made")
	})
	t.Run("embedded Redis", func(t *testing.T) {
		for nth := 1; nth <= 2; nth++ {
			assertRun(t, "", nth)
		}
	})
}

func assertRun(t *testing.T, redisURL string, nth int) {
	t.Helper()
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, redisURL), "run %d", nth)
	assert.Equal(t, wantOutput, out.String(), "run %d", nth)
}
