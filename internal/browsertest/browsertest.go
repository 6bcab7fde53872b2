//go:build unix

// Package browsertest drives headless Chromium (Debian's chromium) over
// the DevTools protocol, for the tests that open the demo's, the chat
// example's and the console's (redisbus ui) pages in a real browser.
package browsertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
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

// Chromium is a headless browser, stopped when the test ends.
type Chromium struct {
	ws      *websocket.Conn
	nextID  atomic.Int64
	mu      sync.Mutex
	pending map[int64]chan cdpResponse
	tabs    map[string]*Tab // by session, for their events
}

type cdpResponse struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// StartChromium starts headless Chromium for t.
func StartChromium(t *testing.T, ctx context.Context) *Chromium {
	bin, err := exec.LookPath("chromium")
	require.NoError(t, err, "the browser test needs Chromium: apt-get install chromium")
	cmd := exec.CommandContext(ctx, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
		"--window-size=1280,900", "--remote-debugging-port=0", "--user-data-dir="+t.TempDir(),
		// A page navigated away from is gone, its WebSockets closed, rather
		// than kept alive in the back/forward cache.
		"--disable-features=BackForwardCache",
		"about:blank")
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
	b := &Chromium{ws: ws, pending: map[int64]chan cdpResponse{}, tabs: map[string]*Tab{}}
	go b.readLoop()
	t.Cleanup(func() { _ = ws.CloseNow() })
	return b
}

func (b *Chromium) readLoop() {
	for {
		_, data, err := b.ws.Read(context.Background())
		if err != nil {
			return
		}
		var msg struct {
			ID        int64           `json:"id"`
			Method    string          `json:"method"`
			SessionID string          `json:"sessionId"`
			Params    json.RawMessage `json:"params"`
			cdpResponse
		}
		if json.Unmarshal(data, &msg) != nil {
			continue
		}
		if msg.ID == 0 { // an event
			b.mu.Lock()
			tab := b.tabs[msg.SessionID]
			b.mu.Unlock()
			if tab != nil {
				tab.event(msg.Method, msg.Params)
			}
			continue
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
func (b *Chromium) call(ctx context.Context, sessionID, method string, params any) (json.RawMessage, error) {
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

// Tab is a page in the browser.
type Tab struct {
	b         *Chromium
	targetID  string
	sessionID string

	mu      sync.Mutex
	errors  []string        // see Errors
	dialogs []string        // see Dialogs
	accept  bool            // see AnswerDialogs
	loaded  map[string]bool // loader IDs of documents that fired load, for Navigate
	load    chan struct{}   // closed (and replaced) on each load
}

// Open opens url in a new tab and returns once it has loaded and shows an
// element with the id ready. From the start, the tab records what the
// page logs as errors (see Errors).
func (b *Chromium) Open(t *testing.T, ctx context.Context, url, ready string) *Tab {
	t.Helper()
	result, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"})
	require.NoError(t, err)
	var target struct{ TargetID string }
	require.NoError(t, json.Unmarshal(result, &target))
	result, err = b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true})
	require.NoError(t, err)
	var session struct{ SessionID string }
	require.NoError(t, json.Unmarshal(result, &session))
	p := &Tab{b: b, targetID: target.TargetID, sessionID: session.SessionID, loaded: map[string]bool{}, load: make(chan struct{})}
	b.mu.Lock()
	b.tabs[p.sessionID] = p
	b.mu.Unlock()
	for _, domain := range []string{"Runtime.enable", "Log.enable", "Page.enable"} { // for their error and dialog events
		_, err = b.call(ctx, p.sessionID, domain, map[string]any{})
		require.NoError(t, err)
	}
	_, err = b.call(ctx, p.sessionID, "Page.setLifecycleEventsEnabled", map[string]any{"enabled": true}) // for Navigate
	require.NoError(t, err)
	p.Navigate(t, ctx, url, ready)
	return p
}

// Navigate loads url in the tab (the same URL again reloads it, keeping
// the tab's sessionStorage) and returns once the new page has loaded and
// shows an element with the id ready, if ready is not empty.
func (p *Tab) Navigate(t *testing.T, ctx context.Context, url, ready string) {
	t.Helper()
	result, err := p.b.call(ctx, p.sessionID, "Page.navigate", map[string]any{"url": url})
	require.NoError(t, err)
	var nav struct{ LoaderID, ErrorText string }
	require.NoError(t, json.Unmarshal(result, &nav))
	require.Empty(t, nav.ErrorText, "navigate to %s", url)
	// The load event of this navigation's document, not of the one before.
	for {
		p.mu.Lock()
		loaded, load := p.loaded[nav.LoaderID], p.load
		p.mu.Unlock()
		if loaded {
			break
		}
		select {
		case <-load:
		case <-ctx.Done():
			t.Fatalf("%s did not load: %v", url, ctx.Err())
		}
	}
	if ready != "" {
		quoted, _ := json.Marshal(ready)
		p.WaitFor(t, ctx, fmt.Sprintf("document.getElementById(%s)", quoted), "an element with id "+ready)
	}
}

// Close closes the tab, and with it its page's connections.
func (p *Tab) Close(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.b.call(ctx, "", "Target.closeTarget", map[string]any{"targetId": p.targetID})
	require.NoError(t, err)
	p.b.mu.Lock()
	delete(p.b.tabs, p.sessionID)
	p.b.mu.Unlock()
}

// SetViewport makes the tab's page width x height CSS pixels, as a phone's
// (mobile: its viewport meta tag applies, touch events) or a desktop's.
func (p *Tab) SetViewport(t *testing.T, ctx context.Context, width, height int, mobile bool) {
	t.Helper()
	_, err := p.b.call(ctx, p.sessionID, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
	})
	require.NoError(t, err)
	_, err = p.b.call(ctx, p.sessionID, "Emulation.setTouchEmulationEnabled", map[string]any{"enabled": mobile})
	require.NoError(t, err)
}

// event records the page's errors: console.error and console.assert
// calls, uncaught exceptions (and unhandled rejections) and the browser's
// own error log entries, such as a resource that failed to load.
func (p *Tab) event(method string, params json.RawMessage) {
	var e struct {
		Type string // consoleAPICalled
		Args []struct {
			Value       any
			Description string
		}
		ExceptionDetails struct { // exceptionThrown
			Text      string
			Exception struct{ Description string }
		}
		Entry struct { // entryAdded
			Level, Text, URL string
		}
	}
	if json.Unmarshal(params, &e) != nil {
		return
	}
	if method == "Page.javascriptDialogOpening" {
		p.dialog(params)
		return
	}
	if method == "Page.lifecycleEvent" {
		p.lifecycle(params)
		return
	}
	var text string
	switch {
	case method == "Runtime.consoleAPICalled" && (e.Type == "error" || e.Type == "assert"):
		parts := make([]string, len(e.Args))
		for i, a := range e.Args {
			parts[i] = a.Description
			if a.Value != nil {
				parts[i] = fmt.Sprint(a.Value)
			}
		}
		text = "console." + e.Type + ": " + strings.Join(parts, " ")
	case method == "Runtime.exceptionThrown":
		text = "exception: " + e.ExceptionDetails.Text + " " + e.ExceptionDetails.Exception.Description
	case method == "Log.entryAdded" && e.Entry.Level == "error":
		text = "log: " + e.Entry.Text + " " + e.Entry.URL
	default:
		return
	}
	p.mu.Lock()
	p.errors = append(p.errors, text)
	p.mu.Unlock()
}

// lifecycle records the load of a document, by its loader ID.
func (p *Tab) lifecycle(params json.RawMessage) {
	var e struct{ LoaderID, Name string }
	if json.Unmarshal(params, &e) != nil || e.Name != "load" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loaded[e.LoaderID] = true
	close(p.load)
	p.load = make(chan struct{})
}

// dialog records an alert, confirm or prompt and answers it as
// AnswerDialogs said. The answer goes from another goroutine: this one
// reads the browser's replies.
func (p *Tab) dialog(params json.RawMessage) {
	var d struct{ Message string }
	_ = json.Unmarshal(params, &d)
	p.mu.Lock()
	p.dialogs = append(p.dialogs, d.Message)
	accept := p.accept
	p.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = p.b.call(ctx, p.sessionID, "Page.handleJavaScriptDialog", map[string]any{"accept": accept})
	}()
}

// AnswerDialogs sets how the tab answers the page's dialogs (confirm()
// and the like) from now on: OK when accept, else Cancel. By default it
// cancels them.
func (p *Tab) AnswerDialogs(accept bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.accept = accept
}

// Dialogs returns the messages of the dialogs the page opened so far.
func (p *Tab) Dialogs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.dialogs...)
}

// Errors returns what the page logged as errors so far: console.error,
// uncaught exceptions, resources that failed to load.
func (p *Tab) Errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

// Click clicks the element that the CSS selector finds, failing the test
// when there is none.
func (p *Tab) Click(t *testing.T, ctx context.Context, selector string) {
	t.Helper()
	p.onElement(t, ctx, selector, "click")
}

// onElement calls method of the element that the CSS selector finds,
// failing the test when there is none.
func (p *Tab) onElement(t *testing.T, ctx context.Context, selector, method string) {
	t.Helper()
	quoted, _ := json.Marshal(selector)
	p.Eval(t, ctx, fmt.Sprintf(`(() => {
		const e = document.querySelector(%s);
		if (!e) throw new Error('no element ' + %s + ' to %s');
		e.%s();
	})()`, quoted, quoted, method, method))
}

// Type focuses the element that the CSS selector finds and types text
// into it, as a keyboard would (input events and all).
func (p *Tab) Type(t *testing.T, ctx context.Context, selector, text string) {
	t.Helper()
	p.onElement(t, ctx, selector, "focus")
	_, err := p.b.call(ctx, p.sessionID, "Input.insertText", map[string]any{"text": text})
	require.NoError(t, err)
}

// PressEnter presses and releases the Enter key in the focused element.
func (p *Tab) PressEnter(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, typ := range []string{"keyDown", "keyUp"} {
		key := map[string]any{"type": typ, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
		if typ == "keyDown" {
			key["text"] = "\r" // what makes a form submit
		}
		_, err := p.b.call(ctx, p.sessionID, "Input.dispatchKeyEvent", key)
		require.NoError(t, err)
	}
}

// WaitFor waits, inside the page, until the JavaScript expression
// condition is true; after 15 s it fails, saying what.
func (p *Tab) WaitFor(t *testing.T, ctx context.Context, condition, what string) {
	t.Helper()
	quoted, _ := json.Marshal(what)
	p.Eval(t, ctx, fmt.Sprintf(`new Promise((resolve, reject) => {
		const deadline = Date.now() + 15000;
		const check = () => {
			if (%s) return resolve(true);
			if (Date.now() > deadline) return reject(new Error('not after 15s: ' + %s));
			setTimeout(check, 20);
		};
		check();
	})`, condition, quoted))
}

// Screenshot saves the tab as a PNG file.
func (p *Tab) Screenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	result, err := p.b.call(ctx, p.sessionID, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true})
	require.NoError(t, err)
	var shot struct{ Data []byte } // base64 in JSON, decoded by encoding/json
	require.NoError(t, json.Unmarshal(result, &shot))
	require.NoError(t, os.WriteFile(path, shot.Data, 0o644))
}

// Eval runs JavaScript in the page, awaiting a returned promise.
func (p *Tab) Eval(t *testing.T, ctx context.Context, expression string) json.RawMessage {
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

// EvalInto runs JavaScript in the page, awaiting a returned promise, and
// decodes the value it returns (as JSON) into v.
func (p *Tab) EvalInto(t *testing.T, ctx context.Context, expression string, v any) {
	t.Helper()
	var result struct{ Value json.RawMessage }
	require.NoError(t, json.Unmarshal(p.Eval(t, ctx, expression), &result))
	require.NoError(t, json.Unmarshal(result.Value, v), "%s = %s", expression, result.Value)
}

// WaitForText waits, inside the page, until the element with id shows
// text; after 15 s it fails with what the element shows.
func (p *Tab) WaitForText(t *testing.T, ctx context.Context, id, text string) {
	t.Helper()
	quotedID, _ := json.Marshal(id)
	quoted, _ := json.Marshal(text)
	p.Eval(t, ctx, fmt.Sprintf(`new Promise((resolve, reject) => {
		const log = document.getElementById(%s);
		const check = () => log.textContent.includes(%s);
		if (check()) return resolve(true);
		const observer = new MutationObserver(() => { if (check()) { observer.disconnect(); resolve(true); } });
		observer.observe(log, {childList: true, characterData: true, subtree: true});
		setTimeout(() => { observer.disconnect(); reject(new Error('not shown after 15s: ' + %s + '\nshown: ' + log.textContent)); }, 15000);
	})`, quotedID, quoted, quoted))
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
