//go:build browser && unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/internal/browsertest"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Run with: go test -tags browser -run Browser ./cmd/redisbus-demo
// It needs Debian's chromium (apt-get install chromium), which .ci/run
// installs. SCREENSHOTS=dir keeps the screenshots there (by default they
// go to a temporary directory, removed after the test).

// TestBrowserDemo opens the demo's page on both nodes in headless
// Chromium, as a person would: alice on node-a's, bob on node-b's. It
// checks what each page says about itself and the room, a message typed
// and sent with Enter crossing the nodes, the two kinds of topic,
// recovery (bob drops his connection, alice writes to him and to the room
// meanwhile, and bob, back through node-a, gets it all marked recovered,
// in order, then live), and both pages at desktop and phone width; on
// the embedded Redis (the default) and on a redis-server.
func TestBrowserDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	browser := browsertest.StartChromium(t, ctx)
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	shots := os.Getenv("SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	for _, backend := range []struct{ name, redisURL string }{{"embedded Redis", ""}, {"redis-server", server.URL}} {
		t.Run(backend.name, func(t *testing.T) {
			dir := filepath.Join(shots, strings.ReplaceAll(backend.name, " ", "-"))
			require.NoError(t, os.MkdirAll(dir, 0o755))
			testDemoInBrowser(t, ctx, browser, backend.redisURL, dir)
		})
	}
}

func testDemoInBrowser(t *testing.T, ctx context.Context, browser *browsertest.Chromium, redisURL, shots string) {
	urls := startDemo(t, ctx, redisURL)
	pages := map[string]*browsertest.Tab{}
	t.Cleanup(func() {
		for name, tab := range pages {
			assert.Empty(t, tab.Errors(), "%s's page logged errors", name)
			tab.Close(t)
		}
	})
	// The first page opened is alice's, the second bob's.
	alice := browser.Open(t, ctx, urls["node-a"], "composer")
	pages["alice"] = alice
	alice.WaitFor(t, ctx, `document.body.dataset.state === 'open'`, "alice's page connected")
	screenshot(t, ctx, alice, filepath.Join(shots, "alice-first-desktop.png"))
	bob := browser.Open(t, ctx, urls["node-b"], "composer")
	pages["bob"] = bob
	bob.WaitFor(t, ctx, `document.body.dataset.state === 'open'`, "bob's page connected")

	t.Run("each page says which node it is, who it is, and who is in the room", func(t *testing.T) {
		for name, node := range map[string]string{"alice": "node-a", "bob": "node-b"} {
			tab := pages[name]
			assert.Equal(t, node, text(t, ctx, tab, `document.getElementById('node-name').textContent`))
			assert.Equal(t, name+" · connected to "+node, text(t, ctx, tab, `document.getElementById('state').textContent`))
			assert.Equal(t, node, text(t, ctx, tab, `document.body.dataset.node`))
			// Both see both, each on their node, in the list and in the diagram.
			tab.WaitFor(t, ctx, `document.querySelector('#presence li[data-client="alice"]')?.dataset.nodes === 'node-a'
				&& document.querySelector('#presence li[data-client="bob"]')?.dataset.nodes === 'node-b'`, "alice on node-a and bob on node-b")
			assert.Equal(t, "alice", text(t, ctx, tab, `document.querySelector('.box[data-node="node-a"] .who').textContent`))
			assert.Equal(t, "bob", text(t, ctx, tab, `document.querySelector('.box[data-node="node-b"] .who').textContent`))
		}
		assert.Equal(t, "@bob", text(t, ctx, alice, `document.getElementById('to').value`), "alice writes to bob by default")
		assert.Equal(t, "@alice", text(t, ctx, bob, `document.getElementById('to').value`), "bob writes to alice by default")
	})

	t.Run("a message typed and sent with Enter crosses the nodes", func(t *testing.T) {
		alice.Type(t, ctx, "#text", "hello from chromium")
		alice.PressEnter(t, ctx)
		bob.WaitFor(t, ctx, `document.querySelector('#log .msg.in[data-text="hello from chromium"] .meta')?.textContent.endsWith('end to end')`, "alice's message")
		assert.Equal(t, "alice → you via node-a", text(t, ctx, bob, `(() => {
			const head = document.querySelector('#log .msg.in[data-text="hello from chromium"] .head');
			return head.querySelector('b').textContent + ' ' + head.childNodes[1].textContent + ' via ' + head.querySelector('.tag').textContent;
		})()`))
		// The sender sees its own text, and that it was delivered.
		alice.WaitFor(t, ctx, `document.querySelector('#log .msg.out[data-text="hello from chromium"] .meta')?.textContent.startsWith('✓ delivered to bob through Redis')`, "alice's message delivered")
		assert.Empty(t, text(t, ctx, alice, `document.getElementById('text').value`), "the field is ready for the next")
	})

	t.Run("Pub/Sub reaches both nodes, a Streams order one node of the group", func(t *testing.T) {
		alice.Eval(t, ctx, `document.getElementById('event').value = 'order 17'; document.getElementById('reliable').click()`)
		alice.Eval(t, ctx, `document.getElementById('event').value = 'cache:invalidate product:42'; document.getElementById('publish').click()`)
		for _, tab := range pages {
			tab.WaitFor(t, ctx, `[...document.querySelectorAll('#events li')].some((li) =>
				li.querySelector('.what').textContent === 'cache:invalidate product:42' && li.dataset.nodes === 'node-a node-b')`, "the event on both nodes")
			tab.WaitFor(t, ctx, `[...document.querySelectorAll('#events li')].some((li) =>
				li.querySelector('.what').textContent === 'order 17' && /^node-[ab]$/.test(li.dataset.nodes))`, "the order on one node")
		}
		var handled int
		for _, url := range urls {
			var log struct{ Log []logEntry }
			getJSON(t, url+"/log", &log)
			for _, e := range log.Log {
				if e.Source == "streams" && e.Text == "order 17" {
					handled++
				}
			}
		}
		assert.Equal(t, 1, handled, "one node handled the order")
	})

	t.Run("bob drops his connection and gets what he missed on node-a, marked recovered", func(t *testing.T) {
		bob.Click(t, ctx, "#drop")
		bob.WaitFor(t, ctx, `document.body.dataset.state === 'waiting'`, "bob offline")
		bob.WaitFor(t, ctx, `/Reconnecting to node-a in [1-5] s/.test(document.getElementById('countdown').textContent)`, "the countdown")
		alice.WaitFor(t, ctx, `!document.querySelector('#presence li[data-client="bob"]')`, "bob gone from the room")
		screenshot(t, ctx, bob, filepath.Join(shots, "bob-dropped-desktop.png"))

		missed := []string{"missed 1", "missed 2", "missed 3"}
		for _, m := range missed {
			alice.Type(t, ctx, "#text", m)
			alice.PressEnter(t, ctx)
		}
		alice.Eval(t, ctx, `document.getElementById('to').value = '#lobby'`)
		alice.Type(t, ctx, "#text", "lobby while bob is away")
		alice.PressEnter(t, ctx)
		for _, m := range missed {
			alice.WaitFor(t, ctx, fmt.Sprintf(`document.querySelector('#log .msg.out[data-text=%q] .meta')?.textContent.startsWith('bob is offline: kept in Redis')`, m), "kept for bob: "+m)
		}
		alice.WaitFor(t, ctx, `document.querySelector('#log .msg.out[data-text="lobby while bob is away"] .meta')?.textContent.startsWith('✓ reached #lobby')`, "the room message")
		require.Equal(t, "waiting", text(t, ctx, bob, `document.body.dataset.state`), "all was sent while bob was away")

		bob.WaitFor(t, ctx, `document.body.dataset.node === 'node-a'`, "bob back, through node-a")
		bob.WaitFor(t, ctx, `document.querySelectorAll('#log .msg.in.recovered').length === 4`, "4 recovered messages")
		alice.Eval(t, ctx, `document.getElementById('to').value = '@bob'`)
		alice.Type(t, ctx, "#text", "live again")
		alice.PressEnter(t, ctx)
		bob.WaitFor(t, ctx, `document.querySelector('#log .msg.in[data-text="live again"]')`, "the live message")

		var rows []struct{ Text, Class string }
		bob.EvalInto(t, ctx, `[...document.querySelectorAll('#log .msg.in')].map((li) => ({text: li.dataset.text, class: li.className}))`, &rows)
		var direct, room []string
		for _, r := range rows {
			label := r.Text
			if strings.Contains(r.Class, "recovered") {
				label += " (recovered)"
			}
			if strings.HasPrefix(r.Text, "lobby") {
				room = append(room, label)
			} else {
				direct = append(direct, label)
			}
		}
		assert.Equal(t, []string{"hello from chromium", "missed 1 (recovered)", "missed 2 (recovered)", "missed 3 (recovered)", "live again"}, direct)
		assert.Equal(t, []string{"lobby while bob is away (recovered)"}, room)
		assert.Equal(t, "bob · connected to node-a", text(t, ctx, bob, `document.getElementById('state').textContent`))
		bob.WaitFor(t, ctx, `[...document.querySelectorAll('#log .sys.recovered')].map((li) => li.textContent).join('\n') ===
			"↺ 3 missed messages sent to you recovered from Redis' history, through node-a.\n↺ 1 missed message in #lobby recovered from Redis' history, through node-a."`, "the recovery notes")
		alice.WaitFor(t, ctx, `document.querySelector('#presence li[data-client="bob"]')?.dataset.nodes === 'node-a'`, "bob in the room again, on node-a")
		alice.WaitFor(t, ctx, `document.querySelector('.box[data-node="node-a"] .who').textContent === 'alicebob'`, "bob drawn under node-a")
		screenshot(t, ctx, bob, filepath.Join(shots, "bob-recovered-desktop.png"))
	})

	t.Run("bob's page, gone and back, recovers what was sent meanwhile", func(t *testing.T) {
		bob.Navigate(t, ctx, "about:blank", "")
		alice.WaitFor(t, ctx, `!document.querySelector('#presence li[data-client="bob"]')`, "bob gone from the room")
		for _, m := range []string{"while the page was gone 1", "while the page was gone 2"} {
			alice.Type(t, ctx, "#text", m)
			alice.PressEnter(t, ctx)
			alice.WaitFor(t, ctx, fmt.Sprintf(`document.querySelector('#log .msg.out[data-text=%q] .meta')?.textContent.startsWith('bob is offline: kept in Redis')`, m), "kept for bob: "+m)
		}
		// The same tab: its sessionStorage kept bob's name and positions.
		bob.Navigate(t, ctx, urls["node-b"], "composer")
		bob.WaitFor(t, ctx, `document.querySelectorAll('#log .msg.in.recovered').length === 2`, "2 recovered messages")
		var texts []string
		bob.EvalInto(t, ctx, `[...document.querySelectorAll('#log .msg.in')].map((li) => li.dataset.text)`, &texts)
		assert.Equal(t, []string{"while the page was gone 1", "while the page was gone 2"}, texts, "only what bob missed, in order")
		assert.Equal(t, "bob · connected to node-b", text(t, ctx, bob, `document.getElementById('state').textContent`))
	})

	t.Run("both pages fit desktop and phone screens", func(t *testing.T) {
		for _, screen := range []struct {
			name          string
			width, height int
			mobile        bool
		}{{"desktop", 1280, 800, false}, {"phone", 390, 844, true}} {
			for name, tab := range pages {
				tab.SetViewport(t, ctx, screen.width, screen.height, screen.mobile)
				tab.WaitFor(t, ctx, fmt.Sprintf(`innerWidth === %d`, screen.width), "the viewport")
				var layout struct{ ScrollWidth, InnerWidth int }
				tab.EvalInto(t, ctx, `({scrollWidth: document.documentElement.scrollWidth, innerWidth})`, &layout)
				assert.LessOrEqual(t, layout.ScrollWidth, layout.InnerWidth, "%s's page at %s width scrolls sideways", name, screen.name)
				var overflowing []string
				tab.EvalInto(t, ctx, `[...document.querySelectorAll('body *')].filter((e) => {
					const r = e.getBoundingClientRect();
					return r.width > 0 && (r.right > innerWidth + 0.5 || r.left < -0.5) && !e.closest('.log, .events');
				}).map((e) => e.tagName + '#' + e.id + '.' + e.className)`, &overflowing)
				assert.Empty(t, overflowing, "%s's page at %s width: elements past the edge", name, screen.name)
				screenshot(t, ctx, tab, filepath.Join(shots, fmt.Sprintf("%s-%s.png", name, screen.name)))
			}
		}
	})
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, url)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

func screenshot(t *testing.T, ctx context.Context, tab *browsertest.Tab, path string) {
	t.Helper()
	tab.Screenshot(t, ctx, path)
	t.Log("screenshot:", path)
}

// text evaluates a JavaScript expression whose value is a string.
func text(t *testing.T, ctx context.Context, tab *browsertest.Tab, expression string) string {
	t.Helper()
	var s string
	tab.EvalInto(t, ctx, expression, &s)
	return s
}

// startDemo runs the two-node demo, on an embedded Redis unless redisURL
// names one, and returns the nodes' URLs.
func startDemo(t *testing.T, ctx context.Context, redisURL string) map[string]string {
	demoCtx, stop := context.WithCancel(ctx)
	reader, writer := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(demoCtx, writer, options{redisURL: redisURL, addrA: "127.0.0.1:0", addrB: "127.0.0.1:0"})
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
