package main

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(nodeProcessEnv) != "" {
		runNodeProcess() // a node of the multi-process tests
		return
	}
	pubsubtest.Main(m)
}

// syncBuffer is a bytes.Buffer the nodes may write to concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestStartupCheck(t *testing.T) {
	for name, redisURL := range map[string]string{
		"embedded Redis": "",
		"redis-server":   pubsubtest.Redis(t).URL,
	} {
		t.Run(name, func(t *testing.T) {
			var out syncBuffer
			require.NoError(t, run(t.Context(), &out, options{redisURL: redisURL, addrA: "127.0.0.1:0", addrB: "127.0.0.1:0", check: true}))
			text := out.String()
			t.Log(text)
			for _, line := range []string{
				"node node-a listening on http://127.0.0.1:",
				"node node-b listening on http://127.0.0.1:",
				"node-a received from a non-Watermill producer: hello from a PHP service",
				"node-b received from a non-Watermill producer: hello from a PHP service",
				"node-a received from node-b: hello from node-b",
				"node-b received from node-a: hello from node-a",
				"start-up check passed",
			} {
				assert.Contains(t, text, line)
			}
			assert.Equal(t, name == "embedded Redis", strings.Contains(text, "embedded Redis"))
		})
	}
}

func TestNodeModeNeedsRedisURL(t *testing.T) {
	err := run(t.Context(), &syncBuffer{}, options{node: "a"})
	assert.ErrorContains(t, err, "REDIS_URL")
}

// A REDIS_URL that does not parse is reported without its password: the
// error goes to a terminal, a CI log or a crash reporter.
func TestBadRedisURLDoesNotPrintThePassword(t *testing.T) {
	var out syncBuffer
	err := run(t.Context(), &out, options{redisURL: "redis://admin:hunter2-secret@127.0.0.1:63x9/0", check: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "REDIS_URL")
	assert.NotContains(t, err.Error()+out.String(), "hunter2-secret")
	assert.NotContains(t, err.Error()+out.String(), "admin")
}
