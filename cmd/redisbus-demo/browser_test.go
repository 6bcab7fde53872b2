//go:build browser && unix

package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/internal/browsertest"
)

// Run with: go test -tags browser -run Browser ./cmd/redisbus-demo
// It needs Debian's chromium (apt-get install chromium), which .ci/run
// installs.

// TestBrowserMessageCrossesNodes opens the demo's page on both nodes in
// headless Chromium, connects as alice and bob, types a message in alice's
// page and waits for it in bob's.
func TestBrowserMessageCrossesNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	urls := startDemo(t, ctx)
	browser := browsertest.StartChromium(t, ctx)
	alice := browser.Open(t, ctx, urls["node-a"], "connect")
	bob := browser.Open(t, ctx, urls["node-b"], "connect")

	alice.Eval(t, ctx, `document.getElementById('client').value = 'alice'; document.getElementById('connect').click()`)
	bob.Eval(t, ctx, `document.getElementById('client').value = 'bob'; document.getElementById('connect').click()`)
	alice.WaitForText(t, ctx, "log", "you are alice on node-a")
	bob.WaitForText(t, ctx, "log", "you are bob on node-b")

	alice.Eval(t, ctx, `document.getElementById('to').value = 'bob';
		document.getElementById('text').value = 'hello from chromium';
		document.getElementById('send').click()`)
	bob.WaitForText(t, ctx, "log", "alice (via node-a): hello from chromium")
	alice.WaitForText(t, ctx, "log", "→ bob: delivered")
}

// startDemo runs the two-node demo on an embedded Redis and returns the
// nodes' URLs.
func startDemo(t *testing.T, ctx context.Context) map[string]string {
	demoCtx, stop := context.WithCancel(ctx)
	reader, writer := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(demoCtx, writer, options{addrA: "127.0.0.1:0", addrB: "127.0.0.1:0"})
		_ = writer.Close()
	}()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	urls := map[string]string{}
	lines := bufio.NewScanner(reader)
	for lines.Scan() {
		line := lines.Text()
		t.Log(line)
		if rest, ok := strings.CutPrefix(line, "node "); ok {
			if name, url, ok := strings.Cut(rest, " listening on "); ok {
				urls[name] = url
			}
		}
		if strings.Contains(line, "start-up check passed") {
			break
		}
	}
	require.Len(t, urls, 2, "the demo did not start")
	go func() { _, _ = io.Copy(io.Discard, reader) }()
	return urls
}
