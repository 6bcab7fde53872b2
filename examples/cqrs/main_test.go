package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

func TestEveryHandlerSeesEveryEvent(t *testing.T) {
	for name, redisURL := range map[string]string{
		"redis-server":   pubsubtest.Redis(t).URL,
		"embedded Redis": "",
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, run(t.Context(), &out, redisURL, pubsubtest.Topic(t)))
			text := out.String()
			t.Log(text)
			for _, line := range []string{
				"send-confirmation: emailed ada about order 1",
				"send-confirmation: emailed linus about order 3",
				"sales-report: order 2 adds 20.00",
				"sales-report: order 3 adds 30.00",
				"both handlers saw all 3 events",
			} {
				assert.Contains(t, text, line)
			}
		})
	}
}
