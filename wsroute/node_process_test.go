package wsroute_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// TestNodeProcess is a node in a process of its own, for tests that kill
// it: it serves WebSockets (clients name themselves with ?client=), keeps
// every client's and room's history, prints "url <ws://…>" once it
// listens, and runs until killed. Run on its own, it does nothing.
func TestNodeProcess(t *testing.T) {
	if os.Getenv("WSROUTE_NODE") == "" {
		return
	}
	opt, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	require.NoError(t, err)
	node, err := wsroute.NewNode(wsroute.Config{
		Client:  redis.NewClient(opt),
		NodeID:  os.Getenv("WSROUTE_NODE"),
		Prefix:  os.Getenv("WSROUTE_PREFIX"),
		History: keepAll,
	}, nil)
	require.NoError(t, err)
	handler, err := node.Handler(wsroute.HandlerConfig{Authenticate: func(r *http.Request) (string, error) {
		if id := r.URL.Query().Get("client"); id != "" {
			return id, nil
		}
		return "", errors.New("no client")
	}})
	require.NoError(t, err)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = http.Serve(listener, handler) }()
	fmt.Printf("url ws://%s\n", listener.Addr())
	// Commands on stdin: "join <client> <room>", answered "joined" or
	// "error <why>".
	commands := bufio.NewScanner(os.Stdin)
	for commands.Scan() {
		var clientID, room string
		if _, err := fmt.Sscanf(commands.Text(), "join %s %s", &clientID, &room); err != nil {
			fmt.Printf("error %v\n", err)
			continue
		}
		if err := node.Join(context.Background(), clientID, room); err != nil {
			fmt.Printf("error %v\n", err)
			continue
		}
		fmt.Println("joined")
	}
	select {} // until killed
}

// processNode is a TestNodeProcess started by a test.
type processNode struct {
	url   string
	cmd   *exec.Cmd
	stdin io.Writer
	lines chan string
}

// nodeProcess starts TestNodeProcess, killed when the test ends.
func nodeProcess(t *testing.T, nodeID, prefix string) *processNode {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestNodeProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WSROUTE_NODE="+nodeID, "WSROUTE_PREFIX="+prefix, "REDIS_URL="+pubsubtest.Redis(t).URL)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	p := &processNode{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			p.lines <- lines.Text()
		}
		close(p.lines)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	line := p.next(t)
	url, ok := strings.CutPrefix(line, "url ")
	require.True(t, ok, "the node process did not start: %q", line)
	p.url = url
	return p
}

func (p *processNode) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		require.True(t, ok, "the node process exited")
		return line
	case <-time.After(waitTimeout):
		t.Fatal("the node process said nothing")
	}
	return ""
}

func (p *processNode) join(t *testing.T, clientID, room string) {
	t.Helper()
	_, err := fmt.Fprintf(p.stdin, "join %s %s\n", clientID, room)
	require.NoError(t, err)
	require.Equal(t, "joined", p.next(t))
}

// kill kills the process with SIGKILL and returns once it exited.
func (p *processNode) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	for range p.lines {
	}
}

// A client whose node is killed (SIGKILL: no goodbye, its registrations
// left behind) reconnects to another node and gets the 500 messages sent
// meanwhile, in order, then the live ones — for itself and for a room.
func TestRecoveryAfterTheNodeWasKilled(t *testing.T) {
	for _, stream := range []string{"client", "room:lobby"} {
		t.Run(stream, func(t *testing.T) {
			client := pubsubtest.NewClient(t)
			prefix := pubsubtest.Topic(t) + ":"
			doomed := nodeProcess(t, "doomed", prefix)
			b := startNode(t, client, wsroute.Config{Prefix: prefix, NodeID: "b", History: keepAll})

			bob := dialFramed(t, doomed.url, "bob", nil)
			first := bob.position(t, "client")
			if stream != "client" {
				doomed.join(t, "bob", "lobby")
				first = bob.position(t, stream)
			}
			sendMany(t, b, kindOf(stream), nameOf(stream, "bob"), 3, "before")
			last := bob.messages(t, stream, first.Offset, 3, false)[2]
			doomed.kill(t)
			sendMany(t, b, kindOf(stream), nameOf(stream, "bob"), 500, "missed")

			back := dialFramed(t, b.url, "bob", map[string]wsroute.Position{stream: pos(last)})
			if stream != "client" {
				back.position(t, "client")
				require.NoError(t, b.Join(t.Context(), "bob", "lobby"))
			}
			expectData(t, back.messages(t, stream, last.Offset, 500, true), "missed")
			p := back.position(t, stream)
			assert.True(t, p.recovered())
			assert.Equal(t, last.Offset+500, p.Offset)
			sendMany(t, b, kindOf(stream), nameOf(stream, "bob"), 5, "live")
			expectData(t, back.messages(t, stream, p.Offset, 5, false), "live")
		})
	}
}
