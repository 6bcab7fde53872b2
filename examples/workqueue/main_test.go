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

func TestFailingOrderIsRetriedThenDeadLettered(t *testing.T) {
	for name, redisURL := range map[string]string{
		"redis-server":   pubsubtest.Redis(t).URL,
		"embedded Redis": "",
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, run(t.Context(), &out, redisURL, pubsubtest.Topic(t)))
			text := out.String()
			t.Log(text)
			assert.Contains(t, text, "order 1 processed: charged 19.99")
			assert.Contains(t, text, "order 3 processed: charged 42.00")
			for _, attempt := range []string{"1", "2", "3"} {
				assert.Contains(t, text, "order 2 failed (attempt "+attempt+")")
			}
			assert.NotContains(t, text, "attempt 4", "MaxDeliveries is 3")
			assert.Contains(t, text, `dead letter: {"id":2,"amount":-5} (nacked 3 times (MaxDeliveries 3))`)
			assert.Equal(t, 1, strings.Count(text, "order 1 processed"), "a processed order is not redelivered")
			for id := 4; id <= 10; id++ {
				assert.Equal(t, 1, strings.Count(text, fmt.Sprintf("order %d processed", id)))
			}
			// Nine orders of 50 ms: each worker gets a part (the one that gets the
			// failing order waits out its backoff: ordered delivery).
			for _, worker := range []string{"worker-1", "worker-2"} {
				var n int
				_, err := fmt.Sscanf(text[strings.Index(text, worker+" processed "):], worker+" processed %d orders", &n)
				require.NoError(t, err)
				assert.GreaterOrEqual(t, n, 2, "%s must share the work", worker)
			}
		})
	}
}
