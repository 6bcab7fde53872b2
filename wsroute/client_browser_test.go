//go:build browser && unix

package wsroute_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/internal/browsertest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// Run with: go test -tags browser -run Browser ./wsroute
// It needs Debian's chromium (apt-get install chromium).

// The browser client (client/wsroute.js), in headless Chromium, against a
// scripted node that speaks wsroute.v1 as docs/wsroute-protocol.md says:
// each subtest plays the frames of one situation and checks what the
// client presents on reconnecting and what it hands the application.
func TestBrowserClientScript(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	browser := browsertest.StartChromium(t, ctx)

	t.Run("recovers what it missed after the connection broke", func(t *testing.T) {
		node, tab, first := connectClient(t, ctx, browser, "alice")
		assert.Equal(t, wsroute.Subprotocol, first.protocol)
		assert.Equal(t, "alice", first.query.Get("client"), "the application's parameters are kept")
		assert.False(t, first.query.Has("recover"), "no position to present yet")

		first.send(t, ctx, fakePosition("client", "E1", 5))
		first.send(t, ctx, fakeMessage("client", "E1", 6, "six"))
		first.send(t, ctx, map[string]any{"type": "message", "stream": "client", "epoch": "E1", "offset": 7,
			"data_base64": base64.StdEncoding.EncodeToString([]byte{0xff, 0, 1})})
		first.send(t, ctx, map[string]any{"type": "message", "stream": "all", "data": "to everyone"}) // never kept
		tab.WaitFor(t, ctx, `messages().length === 3`, "3 messages")
		first.ws.CloseNow() // the network fails: no close frame

		second := node.accept(t, ctx)
		assert.JSONEq(t, `{"client": {"epoch": "E1", "offset": 7}}`, second.query.Get("recover"))
		second.send(t, ctx, asRecovered(fakeMessage("client", "E1", 8, "eight")))
		second.send(t, ctx, asRecovered(fakeMessage("client", "E1", 9, "nine")))
		second.send(t, ctx, fakeRecovered("client", "E1", 9, 2))
		second.send(t, ctx, fakeMessage("client", "E1", 10, "ten"))
		tab.WaitFor(t, ctx, `messages().length === 6`, "6 messages")

		assert.Equal(t, []clientMessage{
			{Stream: "client", Data: "six", Epoch: "E1", Offset: 6},
			{Stream: "client", Data: []any{255.0, 0.0, 1.0}, Epoch: "E1", Offset: 7},
			{Stream: "all", Data: "to everyone"},
			{Stream: "client", Data: "eight", Epoch: "E1", Offset: 8, Recovered: true},
			{Stream: "client", Data: "nine", Epoch: "E1", Offset: 9, Recovered: true},
			{Stream: "client", Data: "ten", Epoch: "E1", Offset: 10},
		}, pageMessages(t, ctx, tab))
		var positions []map[string]any
		tab.EvalInto(t, ctx, `events.filter((e) => e.type === 'position')`, &positions)
		assert.Equal(t, []map[string]any{
			{"type": "position", "stream": "client", "epoch": "E1", "offset": 5.0, "replayed": 0.0},
			{"type": "position", "stream": "client", "epoch": "E1", "offset": 9.0, "recovered": true, "replayed": 2.0},
		}, positions)
		var waits []map[string]any
		tab.EvalInto(t, ctx, `events.filter((e) => e.type === 'state' && e.state === 'waiting')`, &waits)
		require.Len(t, waits, 1)
		assert.Equal(t, 1006.0, waits[0]["code"], "an abnormal closure")

		// Frames the application sends reach the node as they are.
		assert.Equal(t, true, evalValue(t, ctx, tab, `client.send('hello node')`))
		assert.Equal(t, "hello node", second.read(t, ctx))
		assert.Empty(t, tab.Errors())
	})

	t.Run("an offset gap reconnects from the last offset seen; duplicates are dropped", func(t *testing.T) {
		node, tab, first := connectClient(t, ctx, browser, "bob")
		first.send(t, ctx, fakePosition("room:lobby", "R", 0))
		first.send(t, ctx, fakeMessage("room:lobby", "R", 1, "a"))
		first.send(t, ctx, fakeMessage("room:lobby", "R", 1, "a again"))
		first.send(t, ctx, fakeMessage("room:lobby", "R", 3, "c")) // 2 went missing
		assert.Equal(t, websocket.StatusCode(4001), first.closed(t, ctx), "the client closes with CLOSE_GAP")

		second := node.accept(t, ctx)
		assert.JSONEq(t, `{"room:lobby": {"epoch": "R", "offset": 1}}`, second.query.Get("recover"))
		second.send(t, ctx, asRecovered(fakeMessage("room:lobby", "R", 2, "b")))
		second.send(t, ctx, asRecovered(fakeMessage("room:lobby", "R", 3, "c")))
		second.send(t, ctx, fakeRecovered("room:lobby", "R", 3, 2))
		tab.WaitFor(t, ctx, `messages().length === 3`, "3 messages")
		assert.Equal(t, []clientMessage{
			{Stream: "room:lobby", Data: "a", Epoch: "R", Offset: 1},
			{Stream: "room:lobby", Data: "b", Epoch: "R", Offset: 2, Recovered: true},
			{Stream: "room:lobby", Data: "c", Epoch: "R", Offset: 3, Recovered: true},
		}, pageMessages(t, ctx, tab))
		assert.Empty(t, tab.Errors())
	})

	t.Run("lost messages are reported, and the stream goes on from the node's position", func(t *testing.T) {
		node, tab, first := connectClient(t, ctx, browser, "carol")
		first.send(t, ctx, fakePosition("client", "OLD", 40))
		first.ws.CloseNow()
		second := node.accept(t, ctx)
		assert.JSONEq(t, `{"client": {"epoch": "OLD", "offset": 40}}`, second.query.Get("recover"))
		second.send(t, ctx, map[string]any{"type": "position", "stream": "client", "epoch": "NEW", "offset": 2, "recovered": false, "reason": "epoch"})
		second.send(t, ctx, fakeMessage("client", "NEW", 3, "after the restart"))
		tab.WaitFor(t, ctx, `messages().length === 1`, "1 message")
		var last map[string]any
		tab.EvalInto(t, ctx, `events.filter((e) => e.type === 'position').at(-1)`, &last)
		assert.Equal(t, map[string]any{"type": "position", "stream": "client", "epoch": "NEW", "offset": 2.0, "recovered": false, "reason": "epoch", "replayed": 0.0}, last)
		assert.Equal(t, map[string]any{"epoch": "NEW", "offset": 3.0}, evalValue(t, ctx, tab, `client.position('client')`))
		assert.Empty(t, tab.Errors())
	})

	t.Run("a reload of the page presents the positions kept in sessionStorage", func(t *testing.T) {
		node, tab, first := connectClient(t, ctx, browser, "dan")
		first.send(t, ctx, fakePosition("client", "E", 3))
		first.send(t, ctx, fakeMessage("client", "E", 4, "four"))
		tab.WaitFor(t, ctx, `messages().length === 1`, "1 message")

		tab.Navigate(t, ctx, node.server.URL+"/", "ready") // the same tab: the same sessionStorage
		assert.Equal(t, websocket.StatusGoingAway, first.closed(t, ctx), "the browser closed the old page's socket")
		tab.Eval(t, ctx, `start('/ws?client=dan')`)
		second := node.accept(t, ctx)
		assert.JSONEq(t, `{"client": {"epoch": "E", "offset": 4}}`, second.query.Get("recover"))
		assert.Empty(t, tab.Errors())
	})

	t.Run("drop stays down as long as asked, then reconnects to the URL given", func(t *testing.T) {
		_, tab, first := connectClient(t, ctx, browser, "erin")
		nodeB := startFakeNode(t)
		first.send(t, ctx, fakePosition("client", "E", 7))
		tab.WaitFor(t, ctx, `events.some((e) => e.type === 'position')`, "the position")

		tab.Eval(t, ctx, fmt.Sprintf(`dropped = Date.now(); client.drop(400, {url: %q})`, nodeB.server.URL+"/ws?client=erin"))
		assert.Equal(t, websocket.StatusCode(4000), first.closed(t, ctx), "the client closes with CLOSE_DROPPED")
		second := nodeB.accept(t, ctx)
		assert.JSONEq(t, `{"client": {"epoch": "E", "offset": 7}}`, second.query.Get("recover"))
		second.send(t, ctx, fakePosition("client", "E", 7))
		tab.WaitFor(t, ctx, `client.state === 'open'`, "open again")
		var waits []map[string]any
		tab.EvalInto(t, ctx, `events.filter((e) => e.type === 'state' && e.state === 'waiting')`, &waits)
		require.Len(t, waits, 1)
		assert.Equal(t, 400.0, waits[0]["delay"])
		assert.Equal(t, 4000.0, waits[0]["code"])
		var downFor float64
		tab.EvalInto(t, ctx, `events.find((e) => e.type === 'state' && e.state === 'connecting' && e.url.startsWith(`+
			fmt.Sprintf("%q", "ws"+strings.TrimPrefix(nodeB.server.URL, "http"))+`)).time - dropped`, &downFor)
		assert.GreaterOrEqual(t, downFor, 400.0, "it stayed down")
		assert.Empty(t, tab.Errors())
	})

	t.Run("the backoff doubles up to its cap, with jitter", func(t *testing.T) {
		node := startFakeNode(t)
		node.refuse.Store(5)
		tab := browser.Open(t, ctx, node.server.URL+"/", "ready")
		tab.Eval(t, ctx, `start('/ws?client=frank', {minDelay: 40, maxDelay: 160})`)
		node.accept(t, ctx)
		var delays []float64
		tab.EvalInto(t, ctx, `events.filter((e) => e.type === 'state' && e.state === 'waiting').map((e) => e.delay)`, &delays)
		require.Len(t, delays, 5, "one wait after each refusal")
		for i, ceiling := range []float64{40, 80, 160, 160, 160} {
			assert.GreaterOrEqual(t, delays[i], ceiling/2, "wait %d", i)
			assert.LessOrEqual(t, delays[i], ceiling, "wait %d", i)
		}
		// The browser reports each refused handshake; nothing else.
		for _, e := range tab.Errors() {
			assert.Contains(t, e, "503")
		}
	})

	t.Run("it presents at most 64 positions and 8 KiB, the newest", func(t *testing.T) {
		node, tab, first := connectClient(t, ctx, browser, "gina")
		for i := range 70 {
			first.send(t, ctx, fakePosition(fmt.Sprintf("room:r%d", i), "E", i))
		}
		tab.WaitFor(t, ctx, `events.filter((e) => e.type === 'position').length === 70`, "70 positions")
		first.ws.CloseNow()
		second := node.accept(t, ctx)
		var presented map[string]any
		require.NoError(t, json.Unmarshal([]byte(second.query.Get("recover")), &presented))
		assert.Len(t, presented, 64)
		assert.NotContains(t, presented, "room:r5", "the oldest are left out")
		assert.Contains(t, presented, "room:r6")
		assert.Contains(t, presented, "room:r69")

		long := strings.Repeat("x", 3000)
		for i := range 3 {
			second.send(t, ctx, fakePosition(fmt.Sprintf("room:%s%d", long, i), "E", 1))
		}
		tab.WaitFor(t, ctx, `events.filter((e) => e.type === 'position').length === 73`, "73 positions")
		second.ws.CloseNow()
		third := node.accept(t, ctx)
		assert.LessOrEqual(t, len(third.query.Get("recover")), 8<<10)
		presented = nil
		require.NoError(t, json.Unmarshal([]byte(third.query.Get("recover")), &presented))
		var streams []string
		for stream := range presented {
			streams = append(streams, strings.Replace(stream, long, "<3000 x>", 1))
		}
		assert.ElementsMatch(t, []string{"room:<3000 x>1", "room:<3000 x>2"}, streams, "the two newest fit in 8 KiB")

		// A stream left out that the node starts afresh is reported as
		// not recovered, never as a silent fresh start.
		third.send(t, ctx, fakePosition("room:r5", "E", 9))
		tab.WaitFor(t, ctx, `events.some((e) => e.type === 'position' && e.stream === 'room:r5' && e.recovered === false && e.reason === 'not presented')`,
			"room:r5 reported not recovered")
	})

	t.Run("a left room's position is forgotten", func(t *testing.T) {
		node, tab, first := connectClient(t, ctx, browser, "hal")
		first.send(t, ctx, fakePosition("client", "E", 1))
		first.send(t, ctx, fakePosition("room:lobby", "R", 4))
		first.send(t, ctx, map[string]any{"type": "left", "stream": "room:lobby"})
		tab.WaitFor(t, ctx, `client.position('room:lobby') === undefined`, "the room forgotten")
		first.ws.CloseNow()
		second := node.accept(t, ctx)
		assert.JSONEq(t, `{"client": {"epoch": "E", "offset": 1}}`, second.query.Get("recover"))
	})

	t.Run("a connection silent for two ping intervals is closed and replaced", func(t *testing.T) {
		node, tab, first := connectClient(t, ctx, browser, "ida")
		first.send(t, ctx, map[string]any{"type": "ping", "interval": 100})
		first.send(t, ctx, fakePosition("client", "E", 3))
		// Nothing more from the node: the path is dead, though open.
		assert.Equal(t, websocket.StatusCode(4002), first.closed(t, ctx))
		second := node.accept(t, ctx)
		assert.JSONEq(t, `{"client": {"epoch": "E", "offset": 3}}`, second.query.Get("recover"))
		tab.WaitFor(t, ctx, `events.some((e) => e.type === 'state' && e.code === 4002)`, "the reason told")
	})

	t.Run("a stored position the node would refuse is not presented", func(t *testing.T) {
		node := startFakeNode(t)
		tab := browser.Open(t, ctx, node.server.URL+"/", "ready")
		tab.Eval(t, ctx, `sessionStorage.setItem('test', JSON.stringify({"client": {"epoch": "", "offset": 1, "at": 1},
			"room:ok": {"epoch": "E", "offset": 2, "at": 2}, "queue": {"epoch": "E", "offset": 3, "at": 3}}))`)
		tab.Eval(t, ctx, `start('/ws?client=jo')`)
		first := node.accept(t, ctx)
		assert.JSONEq(t, `{"room:ok": {"epoch": "E", "offset": 2}}`, first.query.Get("recover"))
	})
}

// clientPage loads the client and records what it hands the application
// in events; start(url, options) makes and connects a client.
const clientPage = `<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>wsroute.js</title>
<script type="module">
import { WsrouteClient } from '/wsroute.js';
window.events = [];
window.messages = () => events.filter((e) => e.type === 'message');
window.start = (url, options = {}) => {
  window.client = new WsrouteClient(url, {
    minDelay: 20, maxDelay: 100, storage: sessionStorage, storageKey: 'test',
    onMessage: (m) => events.push({type: 'message', ...m, data: m.data instanceof Uint8Array ? Array.from(m.data) : m.data}),
    onPosition: (p) => events.push({type: 'position', ...p}),
    onState: (state, info) => events.push({type: 'state', state, time: Date.now(), ...info}),
    ...options,
  });
  client.connect();
};
document.body.append(Object.assign(document.createElement('div'), {id: 'ready'}));
</script>
`

// clientMessage is what the client hands onMessage, as the page records it.
type clientMessage struct {
	Stream    string
	Data      any // a string, or the bytes as numbers
	Epoch     string
	Offset    int
	Recovered bool
}

// connectClient starts a fake node, opens the page on it, starts a client
// of it as clientID, and returns once the client connected.
func connectClient(t *testing.T, ctx context.Context, browser *browsertest.Chromium, clientID string) (*fakeNode, *browsertest.Tab, *fakeConn) {
	t.Helper()
	node := startFakeNode(t)
	tab := browser.Open(t, ctx, node.server.URL+"/", "ready")
	tab.Eval(t, ctx, fmt.Sprintf(`start('/ws?client=%s')`, clientID))
	return node, tab, node.accept(t, ctx)
}

func pageMessages(t *testing.T, ctx context.Context, tab *browsertest.Tab) []clientMessage {
	t.Helper()
	var got []clientMessage
	tab.EvalInto(t, ctx, `messages()`, &got)
	return got
}

func evalValue(t *testing.T, ctx context.Context, tab *browsertest.Tab, expression string) any {
	t.Helper()
	var v any
	tab.EvalInto(t, ctx, expression, &v)
	return v
}

func fakePosition(stream, epoch string, offset int) map[string]any {
	return map[string]any{"type": "position", "stream": stream, "epoch": epoch, "offset": offset}
}

// fakeRecovered is the position after replayed recovered messages.
func fakeRecovered(stream, epoch string, offset, replayed int) map[string]any {
	frame := fakePosition(stream, epoch, offset)
	frame["recovered"], frame["replayed"] = true, replayed
	return frame
}

func fakeMessage(stream, epoch string, offset int, data string) map[string]any {
	return map[string]any{"type": "message", "stream": stream, "epoch": epoch, "offset": offset, "data": data}
}

func asRecovered(frame map[string]any) map[string]any {
	frame["recovered"] = true
	return frame
}

// fakeNode serves the page, the client script and a WebSocket endpoint
// whose connections the test plays.
type fakeNode struct {
	server *httptest.Server
	conns  chan *fakeConn
	refuse atomic.Int32 // upgrades to answer 503 before accepting one
}

type fakeConn struct {
	query    url.Values
	protocol string
	ws       *websocket.Conn
	frames   chan string               // what the client sent
	status   chan websocket.StatusCode // how the client closed, once it did
}

func startFakeNode(t *testing.T) *fakeNode {
	node := &fakeNode{conns: make(chan *fakeConn, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(clientPage))
	})
	mux.Handle("/wsroute.js", wsroute.ClientScript())
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if node.refuse.Add(-1) >= 0 {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:       []string{wsroute.Subprotocol},
			InsecureSkipVerify: true, // pages of other fake nodes connect too
		})
		if err != nil {
			return
		}
		c := &fakeConn{query: r.URL.Query(), protocol: ws.Subprotocol(), ws: ws, frames: make(chan string, 16), status: make(chan websocket.StatusCode, 1)}
		node.conns <- c
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				c.status <- websocket.CloseStatus(err)
				return
			}
			c.frames <- string(data)
		}
	})
	node.server = httptest.NewServer(mux)
	t.Cleanup(node.server.Close)
	return node
}

// accept returns the next connection the client opens.
func (n *fakeNode) accept(t *testing.T, ctx context.Context) *fakeConn {
	t.Helper()
	select {
	case c := <-n.conns:
		t.Cleanup(func() { c.ws.CloseNow() })
		return c
	case <-ctx.Done():
		t.Fatal("the client did not connect")
		return nil
	}
}

func (c *fakeConn) send(t *testing.T, ctx context.Context, frame map[string]any) {
	t.Helper()
	data, err := json.Marshal(frame)
	require.NoError(t, err)
	require.NoError(t, c.ws.Write(ctx, websocket.MessageText, data))
}

func (c *fakeConn) read(t *testing.T, ctx context.Context) string {
	t.Helper()
	select {
	case frame := <-c.frames:
		return frame
	case <-ctx.Done():
		t.Fatal("the client sent nothing")
		return ""
	}
}

// closed returns the status code the client closed the connection with.
func (c *fakeConn) closed(t *testing.T, ctx context.Context) websocket.StatusCode {
	t.Helper()
	select {
	case code := <-c.status:
		return code
	case <-ctx.Done():
		t.Fatal(errors.New("the client did not close the connection"))
		return 0
	}
}
