package wsroute_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// recoveryNodes starts two nodes, a and b, keeping clients' and rooms'
// histories.
func recoveryNodes(t *testing.T, client redis.UniversalClient, history wsroute.HistoryConfig) (a, b *testNode) {
	t.Helper()
	prefix := pubsubtest.Topic(t) + ":"
	a = startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "a", History: history})
	b = startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "b", History: history})
	return a, b
}

var keepAll = wsroute.HistoryConfig{Clients: true, Rooms: true}

// sendMany sends n messages to a client ("client") or room ("room:…")
// from node, "<prefix> 0" to "<prefix> n-1", and checks each was kept.
func sendMany(t *testing.T, node *testNode, clientOrRoom, to string, n int, prefix string) {
	t.Helper()
	for i := range n {
		data := []byte(fmt.Sprintf("%s %d", prefix, i))
		var result wsroute.Result
		var err error
		if clientOrRoom == "client" {
			result, err = node.SendToClient(t.Context(), to, data)
		} else {
			result, err = node.Broadcast(t.Context(), to, data)
		}
		require.NoError(t, err)
		require.NotZero(t, result.Offset, "message %d was not kept", i)
	}
}

// expectData checks the frames carry "<prefix> 0" to "<prefix> n-1".
func expectData(t *testing.T, frames []frame, prefix string) {
	t.Helper()
	for i, f := range frames {
		require.Equal(t, fmt.Sprintf("%s %d", prefix, i), f.Data)
	}
}

// A client that disconnects, misses 500 messages and reconnects to the
// other node gets all 500, in order, marked recovered, then the live ones,
// none missed or doubled — for its own messages and for a room's.
func TestRecoveryOnAnotherNode(t *testing.T) {
	for _, stream := range []string{"client", "room:lobby"} {
		t.Run(stream, func(t *testing.T) {
			a, b := recoveryNodes(t, pubsubtest.NewClient(t), keepAll)
			bob := dialFramed(t, a.url, "bob", nil)
			start := bob.position(t, "client")
			require.Nil(t, start.Recovered, "a client that gave no position does not recover")
			require.Zero(t, start.Offset)
			first := start
			if stream != "client" {
				require.NoError(t, a.Join(t.Context(), "bob", "lobby"))
				first = bob.position(t, stream)
			}
			sendMany(t, b, kindOf(stream), nameOf(stream, "bob"), 3, "before")
			seen := bob.messages(t, stream, first.Offset, 3, false)
			expectData(t, seen, "before")
			bob.close()

			sendMany(t, b, kindOf(stream), nameOf(stream, "bob"), 500, "missed")
			positions := map[string]wsroute.Position{"client": pos(start), stream: pos(seen[2])}
			back := dialFramed(t, b.url, "bob", positions)
			if stream != "client" {
				recoveredOwn := back.position(t, "client")
				assert.True(t, recoveredOwn.recovered(), "nothing was sent to bob himself: he recovered nothing, and knows it")
				require.NoError(t, b.Join(t.Context(), "bob", "lobby"))
			}
			expectData(t, back.messages(t, stream, seen[2].Offset, 500, true), "missed")
			done := back.position(t, stream)
			assert.True(t, done.recovered())
			assert.Equal(t, 500, done.Replayed)
			assert.Equal(t, seen[2].Offset+500, done.Offset)

			sendMany(t, a, kindOf(stream), nameOf(stream, "bob"), 10, "live")
			expectData(t, back.messages(t, stream, done.Offset, 10, false), "live")
			assert.EqualValues(t, 1+boolToInt(stream != "client"), b.Stats().Recovered, "bob's own stream too, for a room")
			assert.EqualValues(t, 500, b.Stats().Replayed)
		})
	}
}

func kindOf(stream string) string {
	if stream == "client" {
		return "client"
	}
	return "room"
}

func nameOf(stream, client string) string {
	if room, ok := strings.CutPrefix(stream, "room:"); ok {
		return room
	}
	return client
}

func boolToInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Messages sent while a client recovers are neither lost nor doubled at
// the seam between the history and live delivery: a sender keeps sending
// while the client reconnects and replays.
func TestRecoverySeamUnderABurst(t *testing.T) {
	for _, stream := range []string{"client", "room:lobby"} {
		t.Run(stream, func(t *testing.T) {
			a, b := recoveryNodes(t, pubsubtest.NewClient(t), keepAll)
			bob := dialFramed(t, a.url, "bob", nil)
			last := bob.position(t, "client")
			if stream != "client" {
				require.NoError(t, a.Join(t.Context(), "bob", "lobby"))
				last = bob.position(t, stream)
			}
			stop, sent := make(chan struct{}), make(chan int, 1)
			var once sync.Once
			stopSending := func() int {
				once.Do(func() { close(stop) })
				total := <-sent
				sent <- total
				return total
			}
			t.Cleanup(func() { stopSending() }) // before the nodes close
			go func() {
				i := 0
				defer func() { sent <- i }()
				for ; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					data := []byte(fmt.Sprintf("burst %d", i))
					var err error
					if stream == "client" {
						_, err = b.SendToClient(context.Background(), "bob", data)
					} else {
						_, err = b.Broadcast(context.Background(), "lobby", data)
					}
					if !assert.NoError(t, err) {
						return
					}
				}
			}()
			// Some live, then a drop in the middle of the burst.
			got := bob.messages(t, stream, last.Offset, 50, false)
			bob.close()
			positions := map[string]wsroute.Position{stream: pos(got[len(got)-1])}
			back := dialFramed(t, b.url, "bob", positions)
			if stream != "client" {
				back.position(t, "client") // connected
				require.NoError(t, b.Join(t.Context(), "bob", "lobby"))
			}
			// Read until the recovery ended and 200 live messages came,
			// then stop the sender and read the rest.
			offset, live, recovered, seam := got[len(got)-1].Offset, 0, 0, false
			check := func(f frame) {
				t.Helper()
				switch {
				case f.Type == "position":
					require.Equal(t, stream, f.Stream)
					require.True(t, f.recovered(), "%+v", f)
					require.Equal(t, offset, f.Offset)
					seam = true
				default:
					require.Equal(t, stream, f.Stream)
					require.Equal(t, offset+1, f.Offset, "a gap or a duplicate")
					require.Equal(t, !seam, f.recovered(), "recovered messages come before the position frame, live ones after")
					offset = f.Offset
					if seam {
						live++
					} else {
						recovered++
					}
				}
			}
			for live < 200 {
				check(back.next(t))
			}
			total := stopSending()
			for offset < got[0].Offset-1+uint64(total) {
				check(back.next(t))
			}
			assert.Positive(t, recovered, "the client missed messages while away")
			t.Logf("recovered %d, then %d live; %d sent", recovered, live, total)
			select {
			case f := <-back.frames:
				t.Fatalf("a frame after the last message: %+v", f)
			default:
			}
		})
	}
}

// A client away for more messages than the history keeps is told it did
// not recover ("trimmed"), gets none of the old ones, and goes on live.
func TestRecoveryBeyondTheHistory(t *testing.T) {
	a, b := recoveryNodes(t, pubsubtest.NewClient(t), wsroute.HistoryConfig{Clients: true, Size: 10})
	bob := dialFramed(t, a.url, "bob", nil)
	start := bob.position(t, "client")
	bob.close()
	sendMany(t, b, "client", "bob", 50, "missed")

	back := dialFramed(t, b.url, "bob", map[string]wsroute.Position{"client": pos(start)})
	p := back.position(t, "client")
	require.NotNil(t, p.Recovered)
	assert.False(t, *p.Recovered)
	assert.Equal(t, "trimmed", p.Reason)
	assert.EqualValues(t, 50, p.Offset, "the stream goes on from its last offset")
	sendMany(t, a, "client", "bob", 3, "live")
	expectData(t, back.messages(t, "client", 50, 3, false), "live")
	assert.EqualValues(t, 1, b.Stats().RecoveryFailed)
}

// Messages older than History.TTL are not recovered, however few.
func TestRecoveryBeyondTheHistoryTTL(t *testing.T) {
	client := pubsubtest.NewClient(t)
	const ttl = 200 * time.Millisecond
	a, b := recoveryNodes(t, client, wsroute.HistoryConfig{Clients: true, TTL: ttl})
	bob := dialFramed(t, a.url, "bob", nil)
	start := bob.position(t, "client")
	bob.close()
	result, err := b.SendToClient(t.Context(), "bob", []byte("old news"))
	require.NoError(t, err)
	kept, err := client.Time(t.Context()).Result()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		now, err := client.Time(t.Context()).Result()
		return err == nil && now.Sub(kept) > ttl
	}, waitTimeout, 10*time.Millisecond)

	back := dialFramed(t, b.url, "bob", map[string]wsroute.Position{"client": pos(start)})
	p := back.position(t, "client")
	assert.False(t, p.recovered())
	assert.Equal(t, "trimmed", p.Reason)
	assert.Equal(t, result.Offset, p.Offset)
}

// A client whose position is from a history Redis lost (restarted empty)
// is told so ("epoch"); so is one connected across the restart, by the
// first message of the new history.
func TestRecoveryAfterRedisRestartedEmpty(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	a, b := recoveryNodes(t, client, keepAll)
	bob := dialFramed(t, a.url, "bob", nil)
	carol := dialFramed(t, a.url, "carol", nil)
	bobAt := bob.position(t, "client")
	carolAt := carol.position(t, "client")
	sendMany(t, b, "client", "bob", 3, "before")
	sendMany(t, b, "client", "carol", 3, "before")
	bob.messages(t, "client", bobAt.Offset, 3, false)
	carol.messages(t, "client", carolAt.Offset, 3, false)
	old := carolAt.Epoch
	bob.close()

	server.Restart(t)
	// Subscribed and registered again, carol's node finds her history
	// gone, and says so.
	p := carol.position(t, "client")
	assert.False(t, p.recovered())
	assert.Equal(t, "epoch", p.Reason)
	assert.NotEqual(t, old, p.Epoch)
	assert.Zero(t, p.Offset)
	result, err := b.SendToClient(t.Context(), "carol", []byte("new epoch"))
	require.NoError(t, err)
	require.Equal(t, p.Epoch, result.Epoch)
	require.EqualValues(t, 1, result.Offset)
	f := carol.next(t)
	assert.Equal(t, "new epoch", f.Data)
	assert.EqualValues(t, 1, f.Offset)
	assert.False(t, f.recovered(), "sent after her node caught up: live")

	_, err = b.SendToClient(t.Context(), "bob", []byte("missed, new epoch"))
	require.NoError(t, err)
	back := dialFramed(t, b.url, "bob", map[string]wsroute.Position{"client": {Epoch: bobAt.Epoch, Offset: 3}})
	p = back.position(t, "client")
	assert.False(t, p.recovered())
	assert.Equal(t, "epoch", p.Reason)
	assert.NotEqual(t, bobAt.Epoch, p.Epoch)
	assert.EqualValues(t, 1, p.Offset)
}

// When the node's own subscription drops, the messages routed meanwhile
// are lost on the way to it; the next message shows the gap, and the node
// fills it from the history before it goes on.
func TestRecoveryFillsAGapInLiveDelivery(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	a, b := recoveryNodes(t, client, keepAll)
	bob := dialFramed(t, a.url, "bob", nil)
	at := bob.position(t, "client")
	sendMany(t, b, "client", "bob", 3, "before")
	bob.messages(t, "client", at.Offset, 3, false)

	// Every subscription connection drops; a message sent at once finds
	// a's channel deaf until it subscribes and registers again (kill
	// again if it was back first).
	sent := 3
	send := func() wsroute.Status {
		t.Helper()
		result, err := b.SendToClient(t.Context(), "bob", []byte(fmt.Sprintf("during %d", sent)))
		require.NoError(t, err)
		sent++
		return result.Status
	}
	for kills := 0; ; kills++ {
		require.Less(t, kills, 100, "a's subscription never found deaf")
		require.NoError(t, client.Do(t.Context(), "CLIENT", "KILL", "TYPE", "pubsub").Err())
		if send() != wsroute.Delivered {
			break
		}
	}
	for send() != wsroute.Delivered { // until a listens again
		require.Less(t, sent, 100_000, "a's subscription never came back")
	}
	// Offsets 4 to sent: all of them, in order, once; the lost ones
	// recovered from the history.
	for offset := uint64(4); offset <= uint64(sent); offset++ {
		f := bob.next(t)
		if f.Type == "position" {
			t.Fatalf("a gap the history covers is filled without a word: %+v", f)
		}
		require.Equal(t, offset, f.Offset, "%+v", f)
	}
	assert.Positive(t, a.Stats().Replayed)
}

// The recover parameter is checked before the upgrade: a malformed one is
// answered 400 with what is wrong. Without the subprotocol it is ignored.
func TestRecoverParameterIsChecked(t *testing.T) {
	a, _ := recoveryNodes(t, pubsubtest.NewClient(t), keepAll)
	httpURL := "http" + strings.TrimPrefix(a.url, "ws")
	for recover, want := range map[string]string{
		`{"client":`:                                 "want a JSON object",
		`{"queue":{"epoch":"x","offset":1}}`:         `stream "queue"`,
		`{"room:":{"epoch":"x","offset":1}}`:         `stream "room:"`,
		`{"client":{"epoch":"","offset":1}}`:         "epoch must have",
		`{"client":{"epoch":"x","offset":-1}}`:       "want a JSON object",
		strings.Repeat(" ", 9000):                    "at most 8192",
		`{"room:x":{"epoch":"x","offset":1}` + "   ": "want a JSON object",
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, httpURL+"?client=bob&recover="+url.QueryEscape(recover), nil)
		require.NoError(t, err)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", "chat, "+wsroute.Subprotocol)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body := readBody(t, resp)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, recover)
		assert.Contains(t, body, want, recover)
	}
	// A plain connection ignores it, and gets raw payloads.
	plain, _, err := websocket.Dial(t.Context(), a.url+"?client=carol&recover="+url.QueryEscape("{not json"), nil)
	require.NoError(t, err)
	defer plain.CloseNow()
	require.Eventually(t, func() bool {
		result, err := a.SendToClient(t.Context(), "carol", []byte("raw"))
		return err == nil && result.Status == wsroute.Delivered
	}, waitTimeout, 5*time.Millisecond)
	assert.Equal(t, "raw", read(t, plain))
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// Binary payloads travel base64-encoded in data_base64; messages sent
// without history have no offset and do not disturb the stream's.
func TestFramedPayloadsAndMessagesWithoutHistory(t *testing.T) {
	a, b := recoveryNodes(t, pubsubtest.NewClient(t), keepAll)
	bob := dialFramed(t, a.url, "bob", nil)
	at := bob.position(t, "client")
	_, err := b.SendToClient(t.Context(), "bob", []byte{0xff, 0x00, 0x01})
	require.NoError(t, err)
	f := bob.next(t)
	assert.Equal(t, []byte{0xff, 0x00, 0x01}, f.DataBase64)
	assert.Equal(t, at.Offset+1, f.Offset)
	assert.Positive(t, f.SentAt)

	result, err := b.SendToClient(t.Context(), "bob", []byte("typing…"), wsroute.WithoutHistory())
	require.NoError(t, err)
	assert.Zero(t, result.Offset)
	f = bob.next(t)
	assert.Equal(t, "typing…", f.Data)
	assert.Zero(t, f.Offset)
	assert.Empty(t, f.Epoch)

	_, err = b.SendToClient(t.Context(), "bob", []byte("kept"))
	require.NoError(t, err)
	assert.Equal(t, at.Offset+2, bob.next(t).Offset)

	_, err = b.BroadcastAll(t.Context(), []byte("everyone"))
	require.NoError(t, err)
	f = bob.next(t)
	assert.Equal(t, "all", f.Stream)
	assert.Equal(t, "everyone", f.Data)
}

// A stream not kept by default (History zero) is kept for the messages
// sent WithHistory; a client that saw one presents its position and
// recovers the stream as any other.
func TestRecoveryOfMessagesSentWithHistory(t *testing.T) {
	a, b := recoveryNodes(t, pubsubtest.NewClient(t), wsroute.HistoryConfig{})
	bob := dialFramed(t, a.url, "bob", nil)
	// No position frame: nothing is kept for bob by default. The first
	// message proves the connection registered.
	require.Eventually(t, func() bool {
		result, err := b.SendToClient(t.Context(), "bob", []byte("plain"), wsroute.WithoutHistory())
		return err == nil && result.Status == wsroute.Delivered
	}, waitTimeout, 5*time.Millisecond)
	assert.Equal(t, "plain", bob.next(t).Data)
	result, err := b.SendToClient(t.Context(), "bob", []byte("important"), wsroute.WithHistory())
	require.NoError(t, err)
	f := bob.next(t)
	require.Equal(t, result.Offset, f.Offset)
	bob.close()

	sendManyWith(t, b, "bob", 5, "missed", wsroute.WithHistory())
	back := dialFramed(t, b.url, "bob", map[string]wsroute.Position{"client": pos(f)})
	expectData(t, back.messages(t, "client", f.Offset, 5, true), "missed")
	assert.True(t, back.position(t, "client").recovered())
}

func sendManyWith(t *testing.T, node *testNode, clientID string, n int, prefix string, opts ...wsroute.SendOption) {
	t.Helper()
	for i := range n {
		_, err := node.SendToClient(t.Context(), clientID, []byte(fmt.Sprintf("%s %d", prefix, i)), opts...)
		require.NoError(t, err)
	}
}

// Recovery is per connection: two tabs of one client, one recovering and
// one connected all along, each get every message once.
func TestRecoveryWithAnotherConnectionOfTheClient(t *testing.T) {
	a, b := recoveryNodes(t, pubsubtest.NewClient(t), keepAll)
	steady := dialFramed(t, a.url, "bob", nil)
	at := steady.position(t, "client")
	away := dialFramed(t, b.url, "bob", nil)
	require.Equal(t, at.Offset, away.position(t, "client").Offset)
	away.close()
	sendMany(t, a, "client", "bob", 20, "m")
	back := dialFramed(t, a.url, "bob", map[string]wsroute.Position{"client": pos(at)})
	expectData(t, back.messages(t, "client", at.Offset, 20, true), "m")
	expectData(t, steady.messages(t, "client", at.Offset, 20, false), "m")
	var wg sync.WaitGroup
	wg.Go(func() { sendMany(t, b, "client", "bob", 5, "n") })
	assert.True(t, back.position(t, "client").recovered())
	expectData(t, back.messages(t, "client", at.Offset+20, 5, false), "n")
	expectData(t, steady.messages(t, "client", at.Offset+20, 5, false), "n")
	wg.Wait()
}

// What was routed while the node's subscription was down reaches its
// clients once it is back, even if nothing is sent after it: the node
// checks the streams its connections follow against their histories.
func TestRecoveryCatchesUpAfterTheNodesSubscriptionDropped(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	a, b := recoveryNodes(t, client, keepAll)
	bob := dialFramed(t, a.url, "bob", nil)
	at := bob.position(t, "client")
	require.NoError(t, a.Join(t.Context(), "bob", "lobby"))
	roomAt := bob.position(t, "room:lobby")

	// Kill the subscriptions and send at once, until a send finds a's
	// channel deaf (it may subscribe again before the send).
	sent := 0
	for deaf := false; !deaf; sent++ {
		require.Less(t, sent, 100, "a's subscription never found deaf")
		require.NoError(t, client.Do(t.Context(), "CLIENT", "KILL", "TYPE", "pubsub").Err())
		result, err := b.SendToClient(t.Context(), "bob", []byte(fmt.Sprint("to bob ", sent)))
		require.NoError(t, err)
		deaf = result.Status != wsroute.Delivered
		_, err = b.Broadcast(t.Context(), "lobby", []byte(fmt.Sprint("to the room ", sent)))
		require.NoError(t, err)
	}
	// Nothing is sent after: every message still arrives, in order.
	next := map[string]uint64{"client": at.Offset + 1, "room:lobby": roomAt.Offset + 1}
	recovered := 0
	for range 2 * sent {
		f := bob.next(t)
		require.Equal(t, "message", f.Type, "%+v", f)
		require.Equal(t, next[f.Stream], f.Offset, "%+v", f)
		next[f.Stream]++
		if f.recovered() {
			recovered++
		}
	}
	assert.Positive(t, recovered)
}

// Recovery never drops what it replays, whatever the send queue's size
// and slow-client policy: replayed messages wait for room in the queue (a
// client reading as fast as it can is not slow), and so does the position
// frame behind them; live messages sent meanwhile follow, in order.
func TestRecoveryWithSmallSendQueues(t *testing.T) {
	for _, size := range []int{1, 4, 256} {
		for _, policy := range []wsroute.SlowClientPolicy{wsroute.DropOldest, wsroute.Disconnect} {
			t.Run(fmt.Sprintf("queue=%d/policy=%d", size, policy), func(t *testing.T) {
				config := wsroute.Config{History: keepAll, SendQueueSize: size, SlowClient: policy}
				prefix := pubsubtest.Topic(t) + ":"
				client := pubsubtest.NewClient(t)
				config.Prefix, config.NodeID = prefix, "a"
				a := startNode(t, client, config)
				config.NodeID = "b"
				b := startNode(t, client, config)
				bob := dialFramed(t, a.url, "bob", nil)
				at := bob.position(t, "client")
				bob.close()
				sendMany(t, a, "client", "bob", 300, "missed")

				back := dialFramed(t, b.url, "bob", map[string]wsroute.Position{"client": pos(at)})
				var live sync.WaitGroup
				live.Go(func() {
					for i := range 100 {
						_, err := a.SendToClient(context.Background(), "bob", []byte(fmt.Sprint("live ", i)))
						assert.NoError(t, err)
					}
				})
				defer live.Wait()
				offset, seam := at.Offset, false
				for offset < at.Offset+400 || !seam {
					f := back.next(t)
					if f.Type == "position" {
						require.True(t, f.recovered(), "%+v", f)
						require.GreaterOrEqual(t, f.Replayed, 300, "live messages kept before the history was read are replayed too")
						seam = true
						continue
					}
					require.Equal(t, offset+1, f.Offset, "%+v", f)
					offset = f.Offset
				}
				stats := b.Stats()
				assert.Zero(t, stats.Dropped)
				assert.Zero(t, stats.Disconnected)
			})
		}
	}
}

// A framed client that stops reading for a while loses none of its kept
// messages: once its socket and send queue are full, they wait in the
// history (the node holds at most SendQueueSize of them), and it gets
// them all, in order, when it reads again.
func TestSlowFramedClientCatchesUpFromTheHistory(t *testing.T) {
	config := wsroute.Config{History: wsroute.HistoryConfig{Clients: true, Size: 5000}, SendQueueSize: 4, SlowClient: wsroute.Disconnect}
	config.Prefix, config.NodeID = pubsubtest.Topic(t)+":", "a"
	a := startNode(t, pubsubtest.NewClient(t), config)
	readFrame := dialUnread(t, a.url, "bob")
	at := readFrame()
	require.Equal(t, "position", at.Type)

	big := strings.Repeat("x", 16<<10) // 32 MB in all: more than the sockets hold
	for i := range 2000 {
		_, err := a.SendToClient(t.Context(), "bob", []byte(fmt.Sprint(i, " ", big)))
		require.NoError(t, err)
	}
	for i := range 2000 {
		f := readFrame()
		require.Equal(t, at.Offset+uint64(i)+1, f.Offset)
	}
	stats := a.Stats()
	assert.Zero(t, stats.Dropped)
	assert.Zero(t, stats.Disconnected)
	assert.Positive(t, stats.Replayed, "the sockets held everything: the test proves nothing")
	t.Logf("replayed from the history: %d of 2000", stats.Replayed)
}

// Messages routed through Send (Deliver, DeliveryHandler) choose with
// MetadataHistory.
func TestSendChoosesHistoryByMetadata(t *testing.T) {
	a, b := recoveryNodes(t, pubsubtest.NewClient(t), wsroute.HistoryConfig{})
	bob := dialFramed(t, a.url, "bob", nil)
	require.Eventually(t, func() bool {
		result, err := b.SendToClient(t.Context(), "bob", []byte("probe"))
		return err == nil && result.Status == wsroute.Delivered
	}, waitTimeout, 5*time.Millisecond)
	require.Equal(t, "probe", bob.next(t).Data)

	for value, kept := range map[string]bool{"true": true, "false": false, "": false, "1": true, "FALSE": false} {
		msg := message.NewMessage(watermill.NewUUID(), []byte("via Send "+value))
		msg.Metadata.Set(wsroute.MetadataToClient, "bob")
		if value != "" {
			msg.Metadata.Set(wsroute.MetadataHistory, value)
		}
		result, err := b.Send(t.Context(), msg)
		require.NoError(t, err)
		assert.Equal(t, kept, result.Offset > 0, value)
		f := bob.next(t)
		assert.Equal(t, "via Send "+value, f.Data)
		assert.Equal(t, kept, f.Offset > 0, value)
	}
	// Anything else is sent as Config.History says (not kept here), not
	// refused: Deliver's Router would retry it for ever.
	msg := message.NewMessage(watermill.NewUUID(), []byte("?"))
	msg.Metadata.Set(wsroute.MetadataToClient, "bob")
	msg.Metadata.Set(wsroute.MetadataHistory, "yes")
	result, err := b.Send(t.Context(), msg)
	require.NoError(t, err)
	assert.Zero(t, result.Offset)
	assert.Equal(t, "?", bob.next(t).Data)
}

// A Redis restarted from an older snapshot (or a replica promoted before
// it had the last writes) has lost the last offsets it gave, and would
// give them again, to other messages, under the same epoch: a client away
// would recover around them without a word. Every history of an earlier
// Redis process starts a new epoch instead: the client away is told, and
// so is one connected across the restart.
func TestRecoveryAfterRedisWentBackInTime(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	a, b := recoveryNodes(t, client, keepAll)
	bob := dialFramed(t, a.url, "bob", nil)
	carol := dialFramed(t, a.url, "carol", nil)
	bobAt, carolAt := bob.position(t, "client"), carol.position(t, "client")
	sendMany(t, b, "client", "bob", 3, "saved")
	bob.messages(t, "client", bobAt.Offset, 3, false)
	require.NoError(t, client.Save(t.Context()).Err()) // the snapshot Redis restarts from
	sendMany(t, b, "client", "bob", 3, "lost")
	last := bob.messages(t, "client", bobAt.Offset+3, 3, false)[2]
	sendMany(t, b, "client", "carol", 1, "before")
	carol.messages(t, "client", carolAt.Offset, 1, false)
	bob.close()

	server.Restart(t) // from the snapshot: offsets 4 to 6 of bob are gone
	// carol's node, subscribed and registered again, finds her history
	// started by another Redis process.
	p := carol.position(t, "client")
	assert.False(t, p.recovered())
	assert.Equal(t, "epoch", p.Reason)
	// New messages to bob would have had offsets 4 to 6 again.
	sendMany(t, b, "client", "bob", 3, "after")
	back := dialFramed(t, b.url, "bob", map[string]wsroute.Position{"client": pos(last)})
	p = back.position(t, "client")
	assert.False(t, p.recovered(), "bob must not recover around messages given his old offsets")
	assert.Equal(t, "epoch", p.Reason)
	assert.NotEqual(t, last.Epoch, p.Epoch)
}

// A slow client under DropOldest loses messages sent without history, as
// the policy says, and none of its kept ones: those are never dropped to
// make room, in whatever mix the two come.
func TestDropOldestKeepsKeptMessages(t *testing.T) {
	for _, size := range []int{1, 4} {
		t.Run(fmt.Sprint("queue=", size), func(t *testing.T) {
			config := wsroute.Config{History: wsroute.HistoryConfig{Clients: true, Size: 5000}, SendQueueSize: size}
			config.Prefix, config.NodeID = pubsubtest.Topic(t)+":", "a"
			a := startNode(t, pubsubtest.NewClient(t), config)
			readFrame := dialUnread(t, a.url, "bob")
			at := readFrame()
			require.Equal(t, "position", at.Type)

			big := strings.Repeat("x", 16<<10) // more than the sockets hold: the queue fills
			for i := range 300 {
				_, err := a.SendToClient(t.Context(), "bob", []byte(fmt.Sprint("kept ", i, " ", big)))
				require.NoError(t, err)
				_, err = a.SendToClient(t.Context(), "bob", []byte(fmt.Sprint("typing ", i)), wsroute.WithoutHistory())
				require.NoError(t, err)
			}
			_, err := a.SendToClient(t.Context(), "bob", []byte("last"))
			require.NoError(t, err)
			next := at.Offset + 1
			for next <= at.Offset+301 {
				f := readFrame()
				if f.Offset == 0 {
					continue // unkept: may be dropped
				}
				require.Equal(t, next, f.Offset, "kept messages arrive all, in order")
				next++
			}
			assert.Positive(t, a.Stats().Dropped, "the queue never filled: the test proves nothing")
		})
	}
}

// A connected client keeps its stream's offset and epoch alive: MetaTTL
// counts from the last message or connection, so a client connected all
// along, with nothing sent for longer than MetaTTL, still recovers.
func TestConnectedClientKeepsItsHistoryMetaAlive(t *testing.T) {
	client := pubsubtest.NewClient(t)
	history := wsroute.HistoryConfig{Clients: true, TTL: 300 * time.Millisecond, MetaTTL: 300 * time.Millisecond}
	prefix := pubsubtest.Topic(t) + ":"
	a := startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "a", History: history})
	bob := dialFramed(t, a.url, "bob", nil)
	at := bob.position(t, "client")
	meta := prefix + "history-meta:client:bob"
	// Three MetaTTLs pass with nothing sent.
	var start time.Time
	require.Eventually(t, func() bool {
		if start.IsZero() {
			start = time.Now()
		}
		n, err := client.Exists(t.Context(), meta).Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "the meta key expired under a connected client")
		return time.Since(start) > 900*time.Millisecond
	}, waitTimeout, 20*time.Millisecond)
	result, err := a.SendToClient(t.Context(), "bob", []byte("still the same epoch"))
	require.NoError(t, err)
	assert.Equal(t, at.Epoch, result.Epoch)
	f := bob.next(t)
	assert.Equal(t, "message", f.Type, "no position frame: nothing was lost")
	assert.Equal(t, at.Offset+1, f.Offset)
}

// dialUnread connects a framed client that reads nothing until asked: the
// returned function reads its next frame. A slow client, as far as the
// node can tell.
func dialUnread(t *testing.T, nodeURL, clientID string) func() frame {
	t.Helper()
	ws, _, err := websocket.Dial(t.Context(), nodeURL+"?client="+clientID, &websocket.DialOptions{Subprotocols: []string{wsroute.Subprotocol}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.CloseNow() })
	ws.SetReadLimit(1 << 20)
	return func() frame {
		t.Helper()
		for {
			var f frame
			require.NoError(t, json.Unmarshal([]byte(read(t, ws)), &f))
			if f.Type != "ping" {
				return f
			}
		}
	}
}

// Messages sent without history wait behind the kept ones before them
// while their stream catches up (here: a client too slow for its queue,
// 300 messages of 64 KiB, more than the sockets hold), so that one
// sender's mix arrives in the order sent.
func TestUnkeptMessagesKeepTheirPlaceBehindKeptOnes(t *testing.T) {
	config := wsroute.Config{History: wsroute.HistoryConfig{Clients: true, Size: 5000}, SendQueueSize: 64}
	config.Prefix, config.NodeID = pubsubtest.Topic(t)+":", "a"
	a := startNode(t, pubsubtest.NewClient(t), config)
	readFrame := dialUnread(t, a.url, "bob")
	at := readFrame()
	require.Equal(t, "position", at.Type)
	big := strings.Repeat("x", 64<<10)
	for i := range 300 {
		opts := []wsroute.SendOption{}
		if i%2 == 1 {
			opts = append(opts, wsroute.WithoutHistory())
		}
		_, err := a.SendToClient(t.Context(), "bob", []byte(fmt.Sprint(i, " ", big)), opts...)
		require.NoError(t, err)
	}
	last, kept := -1, 0
	for kept < 150 {
		f := readFrame()
		var i int
		_, err := fmt.Sscan(f.Data, &i)
		require.NoError(t, err)
		require.Greater(t, i, last, "message %d after %d", i, last)
		last = i
		if f.Offset > 0 {
			kept++
		}
	}
	stats := a.Stats()
	assert.Positive(t, stats.Replayed+stats.Dropped, "the queue never filled: the test proves nothing")
}

// A framed connection taken out of a room is told (a "left" frame), so
// that its client forgets its position there: a later join starts afresh.
func TestFramedConnectionIsToldItLeftARoom(t *testing.T) {
	a, _ := recoveryNodes(t, pubsubtest.NewClient(t), keepAll)
	bob := dialFramed(t, a.url, "bob", nil)
	bob.position(t, "client")
	require.NoError(t, a.Join(t.Context(), "bob", "lobby"))
	bob.position(t, "room:lobby")
	require.NoError(t, a.Leave(t.Context(), "bob", "lobby"))
	f := bob.next(t)
	assert.Equal(t, "left", f.Type)
	assert.Equal(t, "room:lobby", f.Stream)
}

// The node's keepalive sends framed connections a ping frame at once and
// with every ping, saying how often: a browser cannot see WebSocket pings,
// and its client watches for these to notice a dead path.
func TestFramedConnectionsGetPingFrames(t *testing.T) {
	prefix := pubsubtest.Topic(t) + ":"
	a := startNodeWith(t, pubsubtest.NewClient(t), wsroute.Config{Prefix: prefix, NodeID: "a", History: keepAll},
		nodeOptions{handler: wsroute.HandlerConfig{PingInterval: 50 * time.Millisecond}})
	ws, _, err := websocket.Dial(t.Context(), a.url+"?client=bob", &websocket.DialOptions{Subprotocols: []string{wsroute.Subprotocol}})
	require.NoError(t, err)
	defer ws.CloseNow()
	pings := 0
	for pings < 3 {
		var f struct {
			Type     string `json:"type"`
			Interval int64  `json:"interval"`
		}
		require.NoError(t, json.Unmarshal([]byte(read(t, ws)), &f))
		if f.Type == "ping" {
			assert.EqualValues(t, 50, f.Interval)
			pings++
		}
	}
}
