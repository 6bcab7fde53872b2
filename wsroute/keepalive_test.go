package wsroute_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// pings is the keepalive of these tests, short to keep them short.
var pings = wsroute.HandlerConfig{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond}

// silentBound is how soon a connection that went silent must be gone from
// the registry: the documented PingInterval + PongTimeout + 1s (the close
// handshake the node gives it), and 2s for the Redis round trip and for
// the scheduling of a loaded machine, on which this test must not fail.
var silentBound = pings.PingInterval + pings.PongTimeout + time.Second + 2*time.Second

// keepaliveNodes starts a node holding clients, which pings them, and a
// node sending to them.
func keepaliveNodes(t *testing.T, options nodeOptions) (holder, sender *testNode) {
	client := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t) + ":"
	options.handler = pings
	holder = startNodeWith(t, client, wsroute.Config{Prefix: prefix, NodeID: "holder"}, options)
	sender = startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "sender"})
	return holder, sender
}

// countPings returns dial options whose client counts the pings it gets on
// the channel (without waiting for the test) and answers them if answer
// says so.
func countPings(answer bool) (*websocket.DialOptions, <-chan struct{}) {
	got := make(chan struct{}, 1024)
	return &websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool {
		select {
		case got <- struct{}{}:
		default:
		}
		return answer
	}}, got
}

// awaitPings waits for n pings more.
func awaitPings(t *testing.T, got <-chan struct{}, n int) {
	t.Helper()
	for range n {
		select {
		case <-got:
		case <-time.After(waitTimeout):
			t.Fatal("the node stopped pinging")
		}
	}
}

// tcpProxy forwards TCP connections to a node until frozen; then it
// forwards nothing more either way and closes nothing, as a load balancer
// that lost its path to the client does: the node's socket stays open,
// and only pings can tell the client is gone.
type tcpProxy struct {
	url    string
	frozen chan struct{}
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{url: "ws://" + listener.Addr().String(), frozen: make(chan struct{})}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = listener.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			down, err := listener.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", strings.TrimPrefix(target, "ws://"))
			if err != nil {
				_ = down.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, down, up)
			mu.Unlock()
			go p.forward(up, down)
			go p.forward(down, up)
		}
	}()
	return p
}

func (p *tcpProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-p.frozen:
			return // dropped, and nothing more is read
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *tcpProxy) freeze() { close(p.frozen) }

// A client whose path goes dead without a FIN (its network gone, a load
// balancer that lost the path) is closed and gone from the registry within
// the keepalive's bound, while a healthy one answering the pings stays.
func TestHalfOpenConnectionLeavesTheRegistry(t *testing.T) {
	holder, sender := keepaliveNodes(t, nodeOptions{})
	proxy := startProxy(t, holder.url)
	options, got := countPings(true)
	bob := readInBackground(holder.connectWith(t, proxy.url, "bob", options))
	awaitPings(t, got, 3)
	result, err := sender.SendToClient(t.Context(), "bob", []byte("still there?"))
	require.NoError(t, err)
	require.Equal(t, wsroute.Delivered, result.Status)
	require.Equal(t, "still there?", bob.next(t), "a client answering pings stays connected")

	proxy.freeze()
	silent := time.Now()
	awaitOffline(t, sender, "bob")
	gone := time.Since(silent)
	t.Logf("a half-open connection was gone from the registry %s after it went silent (bound %s)", gone.Round(time.Millisecond), silentBound)
	assert.Less(t, gone, silentBound)
	stats := holder.Stats()
	assert.Equal(t, uint64(1), stats.PingTimeouts, "Stats say why it was closed")
	assert.Zero(t, stats.Connections)
	assert.Zero(t, stats.Disconnected)
}

// A client that stops answering pings is closed with StatusPingTimeout and
// deregistered: one that reads but does not answer (it sees the close
// code), and one that stopped reading (github.com/coder/websocket answers
// pings only while Read is called).
func TestClientThatStopsAnsweringPingsIsClosed(t *testing.T) {
	t.Run("reads, answers no pings", func(t *testing.T) {
		holder, sender := keepaliveNodes(t, nodeOptions{})
		options, _ := countPings(false)
		connected := time.Now()
		bob := readInBackground(holder.connectWith(t, holder.url, "bob", options))
		awaitOffline(t, sender, "bob")
		gone := time.Since(connected)
		t.Logf("gone from the registry %s after connecting (bound %s)", gone.Round(time.Millisecond), silentBound)
		assert.Less(t, gone, silentBound)
		assert.Equal(t, uint64(1), holder.Stats().PingTimeouts)
		select {
		case err := <-bob.closed:
			assert.Equal(t, wsroute.StatusPingTimeout, websocket.CloseStatus(err))
			assert.ErrorContains(t, err, "no pong within 100ms")
		case <-time.After(waitTimeout):
			t.Fatal("the client was not told")
		}
	})
	t.Run("stops reading", func(t *testing.T) {
		holder, sender := keepaliveNodes(t, nodeOptions{})
		connected := time.Now()
		holder.connect(t, "bob") // never reads
		awaitOffline(t, sender, "bob")
		gone := time.Since(connected)
		t.Logf("gone from the registry %s after connecting (bound %s)", gone.Round(time.Millisecond), silentBound)
		assert.Less(t, gone, silentBound)
		assert.Equal(t, uint64(1), holder.Stats().PingTimeouts)
	})
}

// Pongs are read with the client's frames: while the node waits for a slow
// Inbound to take a frame, pings go unanswered by no fault of the client,
// which must not be closed for it.
func TestKeepaliveDoesNotBlameAClientForASlowInbound(t *testing.T) {
	holder, sender := keepaliveNodes(t, nodeOptions{inboundWaitsForAck: true})
	options, got := countPings(true)
	ws := holder.connectWith(t, holder.url, "bob", options)
	bob := readInBackground(ws)

	require.NoError(t, ws.Write(t.Context(), websocket.MessageText, []byte("held")))
	held := <-holder.inbound // not acked yet: the node waits for Inbound
	require.Equal(t, "held", string(held.Payload))
	for len(got) > 0 {
		<-got
	}
	// Each ping is sent once the one before ended, so the third comes
	// after at least one went unanswered while the node was not reading.
	awaitPings(t, got, 3)
	held.Ack()

	awaitPings(t, got, 2) // answered and read again
	result, err := sender.SendToClient(t.Context(), "bob", []byte("still connected"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Delivered, result.Status)
	assert.Equal(t, "still connected", bob.next(t))
	assert.Zero(t, holder.Stats().PingTimeouts)
}
