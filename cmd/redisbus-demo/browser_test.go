//go:build browser && unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
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
	browser := startChromium(t, ctx)
	alice := browser.open(t, ctx, urls["node-a"])
	bob := browser.open(t, ctx, urls["node-b"])

	alice.eval(t, ctx, `document.getElementById('client').value = 'alice'; document.getElementById('connect').click()`)
	bob.eval(t, ctx, `document.getElementById('client').value = 'bob'; document.getElementById('connect').click()`)
	alice.waitForLog(t, ctx, "you are alice on node-a")
	bob.waitForLog(t, ctx, "you are bob on node-b")

	alice.eval(t, ctx, `document.getElementById('to').value = 'bob';
		document.getElementById('text').value = 'hello from chromium';
		document.getElementById('send').click()`)
	bob.waitForLog(t, ctx, "alice (via node-a): hello from chromium")
	alice.waitForLog(t, ctx, "→ bob: delivered")
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

// chromium is a headless browser driven over the DevTools protocol.
type chromium struct {
	ws      *websocket.Conn
	nextID  atomic.Int64
	mu      sync.Mutex
	pending map[int64]chan cdpResponse
}

type cdpResponse struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func startChromium(t *testing.T, ctx context.Context) *chromium {
	bin, err := exec.LookPath("chromium")
	require.NoError(t, err, "the browser test needs Chromium: apt-get install chromium")
	cmd := exec.CommandContext(ctx, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
		"--remote-debugging-port=0", "--user-data-dir="+t.TempDir(), "about:blank")
	// Chromium runs renderer and helper processes that write to the profile
	// directory: a process group of its own lets the cleanup stop them all
	// before the directory is removed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stopProcessGroup(t, cmd) })

	// Chromium announces its DevTools endpoint on stderr.
	var endpoint string
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		if _, url, ok := strings.Cut(lines.Text(), "DevTools listening on "); ok {
			endpoint = strings.TrimSpace(url)
			break
		}
	}
	require.NotEmpty(t, endpoint, "chromium did not start its DevTools endpoint")
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	ws, _, err := websocket.Dial(ctx, endpoint, nil)
	require.NoError(t, err)
	ws.SetReadLimit(64 << 20)
	b := &chromium{ws: ws, pending: map[int64]chan cdpResponse{}}
	go b.readLoop()
	t.Cleanup(func() { _ = ws.CloseNow() })
	return b
}

func (b *chromium) readLoop() {
	for {
		_, data, err := b.ws.Read(context.Background())
		if err != nil {
			return
		}
		var msg struct {
			ID int64 `json:"id"`
			cdpResponse
		}
		if json.Unmarshal(data, &msg) != nil || msg.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		c := b.pending[msg.ID]
		delete(b.pending, msg.ID)
		b.mu.Unlock()
		if c != nil {
			c <- msg.cdpResponse
		}
	}
}

// call sends a DevTools command, to a page when sessionID is set.
func (b *chromium) call(ctx context.Context, sessionID, method string, params any) (json.RawMessage, error) {
	id := b.nextID.Add(1)
	c := make(chan cdpResponse, 1)
	b.mu.Lock()
	b.pending[id] = c
	b.mu.Unlock()
	request := map[string]any{"id": id, "method": method, "params": params}
	if sessionID != "" {
		request["sessionId"] = sessionID
	}
	data, err := json.Marshal(request)
	if err != nil {
		return nil, err
	}
	if err := b.ws.Write(ctx, websocket.MessageText, data); err != nil {
		return nil, err
	}
	select {
	case r := <-c:
		if r.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		return r.Result, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// tab is a page in the browser.
type tab struct {
	b         *chromium
	sessionID string
}

// open opens url in a new tab and returns once it has loaded.
func (b *chromium) open(t *testing.T, ctx context.Context, url string) *tab {
	result, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"})
	require.NoError(t, err)
	var target struct{ TargetID string }
	require.NoError(t, json.Unmarshal(result, &target))
	result, err = b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true})
	require.NoError(t, err)
	var session struct{ SessionID string }
	require.NoError(t, json.Unmarshal(result, &session))
	p := &tab{b: b, sessionID: session.SessionID}
	_, err = b.call(ctx, p.sessionID, "Page.navigate", map[string]any{"url": url})
	require.NoError(t, err)
	p.eval(t, ctx, `new Promise((resolve) => {
		if (document.readyState === 'complete' && document.getElementById('connect')) return resolve(true);
		window.addEventListener('load', () => resolve(true));
	})`)
	return p
}

// eval runs JavaScript in the page, awaiting a returned promise.
func (p *tab) eval(t *testing.T, ctx context.Context, expression string) json.RawMessage {
	t.Helper()
	result, err := p.b.call(ctx, p.sessionID, "Runtime.evaluate", map[string]any{
		"expression": expression, "awaitPromise": true, "returnByValue": true,
	})
	require.NoError(t, err)
	var out struct {
		Result           json.RawMessage
		ExceptionDetails *struct {
			Text      string
			Exception struct{ Description string }
		}
	}
	require.NoError(t, json.Unmarshal(result, &out))
	if out.ExceptionDetails != nil {
		t.Fatalf("%s: %s %s", expression, out.ExceptionDetails.Text, out.ExceptionDetails.Exception.Description)
	}
	return out.Result
}

// waitForLog waits, inside the page, until its Received log shows text.
func (p *tab) waitForLog(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	quoted, _ := json.Marshal(text)
	p.eval(t, ctx, fmt.Sprintf(`new Promise((resolve, reject) => {
		const log = document.getElementById('log');
		const check = () => log.textContent.includes(%s);
		if (check()) return resolve(true);
		const observer = new MutationObserver(() => { if (check()) { observer.disconnect(); resolve(true); } });
		observer.observe(log, {childList: true, characterData: true, subtree: true});
		setTimeout(() => { observer.disconnect(); reject(new Error('not in the log after 15s: ' + %s + '\nlog: ' + log.textContent)); }, 15000);
	})`, quoted, quoted))
}

// stopProcessGroup kills cmd's process group and returns once no process of
// it is left.
func stopProcessGroup(t *testing.T, cmd *exec.Cmd) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			t.Errorf("chromium's processes (group %d) outlived SIGKILL by 10 s", pgid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
