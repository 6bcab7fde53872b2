package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// nodeProcessEnv makes the test binary run a demo node (see TestMain).
const nodeProcessEnv = "REDISBUS_DEMO_NODE"

const processNodeTTL = time.Second

// runNodeProcess is main for a node of the multi-process tests.
func runNodeProcess() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Stdout, options{
		redisURL: os.Getenv("REDIS_URL"),
		node:     os.Getenv(nodeProcessEnv),
		addr:     "127.0.0.1:0",
		nodeTTL:  processNodeTTL,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

type nodeProcess struct {
	name string
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startNodeProcess runs a demo node in a process of its own.
func startNodeProcess(t *testing.T, redisURL, name string) *nodeProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), nodeProcessEnv+"="+name, "REDIS_URL="+redisURL)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &nodeProcess{name: name, cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	lines := bufio.NewScanner(stdout)
	prefix := "node " + name + " listening on "
	for lines.Scan() {
		if url, ok := strings.CutPrefix(lines.Text(), prefix); ok {
			p.url = url
			break
		}
	}
	require.NotEmpty(t, p.url, "node %s did not start", name)
	go func() {
		for lines.Scan() {
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *nodeProcess) stats(t *testing.T) wsroute.Stats {
	t.Helper()
	resp, err := http.Get(p.url + "/stats")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct{ WSRoute wsroute.Stats }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return body.WSRoute
}

// demoClient is a browser's side of the demo protocol.
type demoClient struct {
	t         *testing.T
	id        string
	ws        *websocket.Conn
	node      string
	presences int // presence replies read so far (see next)
}

// connect opens a WebSocket to p as id and returns once p registered it.
func connect(t *testing.T, p *nodeProcess, id string) *demoClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(p.url, "http")+"/ws?client="+id, nil)
	require.NoError(t, err)
	ws.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = ws.CloseNow() })
	c := &demoClient{t: t, id: id, ws: ws, node: p.name}
	c.send(frame{Op: "whoami"})
	require.Equal(t, reply{Kind: "info", Text: "you are " + id + " on " + p.name, Node: p.name}, c.next())
	return c
}

func (c *demoClient) send(f frame) {
	c.t.Helper()
	data, err := json.Marshal(f)
	require.NoError(c.t, err)
	require.NoError(c.t, c.ws.Write(context.Background(), websocket.MessageText, data))
}

// next returns the next reply that is not a presence one: those come
// when someone joins or leaves a room the client is in, whenever the node
// handling the event sends them, between the replies a test awaits.
func (c *demoClient) next() reply {
	c.t.Helper()
	for {
		r := c.read()
		if r.Kind != "presence" {
			return r
		}
		c.presences++
	}
}

// awaitPresences reads until the client had n presence replies, which
// must be all it gets meanwhile.
func (c *demoClient) awaitPresences(n int) {
	c.t.Helper()
	for c.presences < n {
		r := c.read()
		require.Equal(c.t, "presence", r.Kind, "%s got %+v", c.id, r)
		c.presences++
	}
}

func (c *demoClient) read() reply {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := c.ws.Read(ctx)
	require.NoError(c.t, err, "%s got nothing", c.id)
	var r reply
	require.NoError(c.t, json.Unmarshal(data, &r))
	return r
}

// assertAck asserts that r says what became of a message to a client.
func assertAck(t *testing.T, to, status string, r reply) {
	t.Helper()
	assert.Equal(t, reply{Kind: "sent", To: to, Status: status}, reply{Kind: r.Kind, To: r.To, Status: r.Status}, "%+v", r)
}

func TestNodesInSeparateProcesses(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	var nodes []*nodeProcess
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 1; i <= 3; i++ {
		wg.Go(func() {
			p := startNodeProcess(t, server.URL, fmt.Sprintf("n%d", i))
			mu.Lock()
			nodes = append(nodes, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	byName := map[string]*nodeProcess{}
	for _, p := range nodes {
		byName[p.name] = p
	}
	n1, n2, n3 := byName["n1"], byName["n2"], byName["n3"]
	alice := connect(t, n1, "alice")

	t.Run("cross-node delivery", func(t *testing.T) {
		bob := connect(t, n2, "bob")
		alice.send(frame{Op: "send", To: "bob", Text: "hi bob"})
		assert.Equal(t, reply{Kind: "direct", From: "alice", Text: "hi bob", Node: "n1"}, bob.next())
		ack := alice.next()
		assertAck(t, "bob", "delivered", ack)
		assert.Equal(t, 1, ack.Nodes)
		assert.Equal(t, uint64(1), ack.Offset, "bob's first message kept in his history")
	})

	t.Run("room broadcast reaches only member nodes", func(t *testing.T) {
		carol := connect(t, n3, "carol")
		connect(t, n2, "dan") // on n2, not in the room
		// Each join is told to the room once, by one node, after it: once
		// alice and then carol had theirs, nothing more comes to n3 but the
		// broadcast.
		alice.send(frame{Op: "join", Room: "lobby"})
		assert.Equal(t, "joined lobby", alice.next().Text)
		alice.awaitPresences(1)
		carol.send(frame{Op: "join", Room: "lobby"})
		assert.Equal(t, "joined lobby", carol.next().Text)
		carol.awaitPresences(1)

		n2Before, n3Before := n2.stats(t).Received, n3.stats(t).Received
		alice.send(frame{Op: "room", Room: "lobby", Text: "hello lobby"})
		want := reply{Kind: "room", From: "alice", Room: "lobby", Text: "hello lobby", Node: "n1"}
		assert.Equal(t, want, carol.next())
		assert.Equal(t, want, alice.next())
		assert.Equal(t, n3Before+1, n3.stats(t).Received)
		assert.Equal(t, n2Before, n2.stats(t).Received, "n2 has no member: the broadcast must not reach it")
	})

	t.Run("a slow client does not slow the others", func(t *testing.T) {
		connect(t, n2, "slow") // never reads
		fast := connect(t, n2, "fast")
		big := strings.Repeat("x", 30<<10)
		const count = 600 // ~18 MB for slow: more than its socket buffers hold
		for i := range count {
			alice.send(frame{Op: "send", To: "slow", Text: big})
			alice.send(frame{Op: "send", To: "fast", Text: fmt.Sprint(i)})
		}
		for i := range count {
			require.Equal(t, fmt.Sprint(i), fast.next().Text)
		}
		for range 2 * count {
			assert.Equal(t, "sent", alice.next().Kind)
		}
		assert.Positive(t, n2.stats(t).Dropped, "the slow client's queue overflowed (DropOldest)")
	})

	t.Run("a client moving to another node keeps receiving after its old connection closes", func(t *testing.T) {
		old := connect(t, n2, "erin")
		moved := connect(t, n3, "erin")
		require.NoError(t, old.ws.Close(websocket.StatusNormalClosure, "")) // the late disconnect
		require.Eventually(t, func() bool {
			n, err := client.HLen(t.Context(), "wsroute:client:erin").Result()
			return err == nil && n == 1 // the moved connection
		}, 10*time.Second, 10*time.Millisecond)
		alice.send(frame{Op: "send", To: "erin", Text: "found you"})
		assert.Equal(t, "found you", moved.next().Text)
		assertAck(t, "erin", "delivered", alice.next())
	})

	t.Run("a killed node's clients are offline within NodeTTL", func(t *testing.T) {
		connect(t, n3, "frank")
		require.NoError(t, n3.cmd.Process.Kill()) // SIGKILL: no goodbye
		<-n3.done
		killed := time.Now()
		require.Eventually(t, func() bool {
			n, err := client.Exists(t.Context(), "wsroute:node:n3").Result()
			return err == nil && n == 0
		}, processNodeTTL+time.Second, 10*time.Millisecond, "the dead node's liveness key must expire within NodeTTL")
		alice.send(frame{Op: "send", To: "frank", Text: "are you there?"})
		assertAck(t, "frank", "offline", alice.next())
		assert.Less(t, time.Since(killed), processNodeTTL+2*time.Second)
		n, err := client.HLen(t.Context(), "wsroute:client:frank").Result()
		require.NoError(t, err)
		assert.Zero(t, n, "the entry was reaped")
	})
}
