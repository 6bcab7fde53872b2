package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

// wantOutput is what every run prints.
var wantOutput = func() string {
	var b strings.Builder
	b.WriteString("publishing 10 orders to 2 workers; order 2 has a negative amount\n")
	for attempt := 1; attempt <= 3; attempt++ {
		fmt.Fprintf(&b, "order 2 failed (attempt %d of 3): amount must be positive\n", attempt)
	}
	b.WriteString(`dead letter: {"id":2,"amount":-5} (nacked 3 times (MaxDeliveries 3))` + "\n")
	b.WriteString("processed order 1: charged 19.99\n")
	b.WriteString("processed order 3: charged 42.00\n")
	for id := 4; id <= 10; id++ {
		fmt.Fprintf(&b, "processed order %d: charged %d.00\n", id, id*10)
	}
	b.WriteString("both workers took a share of the orders\n")
	return b.String()
}()

// Run twice against one Redis, the example prints the same lines: each run
// has a queue of its own, and deletes it.
func TestEveryRunRetriesThenDeadLettersTheFailingOrder(t *testing.T) {
	t.Run("REDIS_URL", func(t *testing.T) {
		server := pubsubtest.Redis(t)
		client := server.Client(t)
		for nth := 1; nth <= 2; nth++ {
			assertRun(t, server.URL, nth)
		}
		keys, err := client.Keys(t.Context(), "*workqueue-example:*").Result()
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
