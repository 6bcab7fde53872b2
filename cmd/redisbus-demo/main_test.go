package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

func TestDemo(t *testing.T) {
	for name, redisURL := range map[string]string{
		"embedded Redis": "",
		"redis-server":   pubsubtest.Redis(t).URL,
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, run(t.Context(), &out, redisURL, 2, 10*time.Millisecond))
			text := out.String()
			t.Log(text)
			for _, line := range []string{
				"node-a received from a non-Watermill producer: hello from a PHP service",
				"node-b received from a non-Watermill producer: hello from a PHP service",
				"node-a received from node-b: greeting #1 from node-b",
				"node-a received from node-b: greeting #2 from node-b",
				"node-b received from node-a: greeting #2 from node-a",
				"node-a published greeting #1 (Redis delivered it to 2 subscribers)",
				"done: each node received 3 messages from elsewhere",
			} {
				assert.Contains(t, text, line)
			}
			assert.Equal(t, name == "embedded Redis", strings.Contains(text, "embedded Redis"))
		})
	}
}
