package wsroute_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// registerGate is a go-redis hook that, once armed, holds the next
// registration (register.lua: a key and five arguments) until opened, and
// reports releases (release.lua: a key and two arguments) as they finish.
type registerGate struct {
	passThroughHooks
	armed      atomic.Bool
	held       chan struct{}
	open       chan struct{}
	registered chan struct{} // the held registration is written
	released   chan struct{}
}

func (g *registerGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		script := cmd.Name() == "evalsha" || cmd.Name() == "eval"
		if script && len(args) == 9 && g.armed.CompareAndSwap(true, false) {
			g.held <- struct{}{}
			<-g.open
			defer close(g.registered)
		}
		err := next(ctx, cmd)
		if script && len(args) == 6 && !redis.HasErrorPrefix(err, "NOSCRIPT") {
			g.released <- struct{}{}
		}
		return err
	}
}

// A connection that closes while its node registers everything again (its
// liveness had lapsed) stays removed: the restore must not bring its
// entry back, which would read as Delivered until RegistrationTTL.
func TestRestoreDoesNotBringBackAClosedConnection(t *testing.T) {
	prefix := pubsubtest.Topic(t) + ":"
	admin := pubsubtest.NewClient(t)
	gate := &registerGate{
		held: make(chan struct{}), open: make(chan struct{}),
		registered: make(chan struct{}), released: make(chan struct{}, 10),
	}
	gated := redis.NewClient(admin.Options())
	gated.AddHook(gate)
	t.Cleanup(func() { _ = gated.Close() })
	holder := startNode(t, gated, wsroute.Config{Prefix: prefix, NodeID: "holder", NodeTTL: 300 * time.Millisecond})
	sender := startNode(t, admin, wsroute.Config{Prefix: prefix, NodeID: "sender"})
	bob := holder.connect(t, "bob")

	gate.armed.Store(true)
	require.NoError(t, admin.Del(t.Context(), prefix+"node:holder").Err()) // the next heartbeat restores
	select {
	case <-gate.held: // the restore is about to write bob's entry again
	case <-time.After(waitTimeout):
		t.Fatal("the node did not restore its registrations")
	}
	require.NoError(t, bob.Close(websocket.StatusNormalClosure, "bye"))
	select {
	case <-gate.released: // bob's entry is released
	case <-time.After(waitTimeout):
		t.Fatal("the closed connection was not released")
	}
	close(gate.open) // now the restore writes it again
	select {
	case <-gate.registered:
	case <-time.After(waitTimeout):
		t.Fatal("the restore did not write the entry")
	}
	require.Eventually(t, func() bool {
		result, err := sender.SendToClient(t.Context(), "bob", []byte("anyone?"))
		return err == nil && result.Status == wsroute.Offline
	}, waitTimeout, 10*time.Millisecond, "bob must read as offline again once the restore is done")
}
