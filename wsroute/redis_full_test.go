package wsroute_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// When Redis is full (maxmemory, noeviction), a node keeps its liveness
// (its key replaces itself) and so its clients stay reachable, since
// routing itself takes no memory; new connections, whose registration
// would, are told to try again later (1013), and are taken again once
// Redis has room.
func TestNodeWhenRedisIsFull(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	config := wsroute.Config{Prefix: "full:", NodeTTL: 300 * time.Millisecond}
	holderConfig, senderConfig := config, config
	holderConfig.NodeID, senderConfig.NodeID = "holder", "sender"
	holder := startNode(t, client, holderConfig)
	sender := startNode(t, client, senderConfig)
	keeperConfig := config
	keeperConfig.NodeID, keeperConfig.History = "keeper", keepAll
	keeper := startNode(t, client, keeperConfig)
	bob := holder.connect(t, "bob")
	_, err := keeper.SendToClient(t.Context(), "bob", []byte("kept before"))
	require.NoError(t, err)
	require.Equal(t, "kept before", read(t, bob))

	require.NoError(t, client.ConfigSet(t.Context(), "maxmemory", "1").Err())
	t.Cleanup(func() { _ = client.ConfigSet(context.Background(), "maxmemory", "0").Err() })
	require.ErrorContains(t, client.Set(t.Context(), "probe", "x", 0).Err(), "OOM", "Redis must be full for this test")

	// Four heartbeats span more than NodeTTL: an unrenewed key would be gone.
	renewals := func() uint64 { s := holder.Stats(); return s.LivenessRenewed + s.LivenessFailed }
	start := renewals()
	require.Eventually(t, func() bool { return renewals() >= start+4 }, waitTimeout, 10*time.Millisecond)
	assert.Zero(t, holder.Stats().LivenessFailed, "the liveness key is renewed while Redis is full")

	assert.ErrorContains(t, holder.Join(t.Context(), "bob", "lobby"), "OOM", "Join says what Redis said")

	result, err := sender.SendToClient(t.Context(), "bob", []byte("still here"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Delivered, result.Status)
	assert.Equal(t, "still here", read(t, bob))

	// A message to keep cannot be kept: it is sent unkept, and its
	// history dropped (see TestHistoryWhenRedisIsFull).
	result, err = keeper.SendToClient(t.Context(), "bob", []byte("to keep"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Delivered, result.Status)
	assert.Zero(t, result.Offset)
	assert.Equal(t, "to keep", read(t, bob))
	assert.EqualValues(t, 1, keeper.Stats().HistoriesDropped)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	refused, _, err := websocket.Dial(ctx, holder.url+"?client=alice", nil)
	require.NoError(t, err)
	defer refused.CloseNow()
	_, _, err = refused.Read(ctx)
	assert.Equal(t, wsroute.StatusTryAgainLater, websocket.CloseStatus(err))
	var closeErr websocket.CloseError
	if assert.ErrorAs(t, err, &closeErr) {
		assert.True(t, strings.Contains(closeErr.Reason, "try again later"), "reason %q", closeErr.Reason)
	}
	assert.Equal(t, uint64(1), holder.Stats().RegistrationsRefused)

	require.NoError(t, client.ConfigSet(t.Context(), "maxmemory", "0").Err())
	holder.connect(t, "alice")
}

// When Redis is full, a message to keep is sent unkept: live delivery
// goes on. Its history is deleted (which takes no memory), so that no
// client can later recover around the hole: connected framed clients get
// it without an offset, and once Redis has room the history starts a new
// epoch, which tells every client of the stream that it missed messages.
func TestHistoryWhenRedisIsFull(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	a, b := recoveryNodes(t, client, keepAll)
	bob := dialFramed(t, a.url, "bob", nil)
	at := bob.position(t, "client")
	sendMany(t, b, "client", "bob", 2, "before")
	before := bob.messages(t, "client", at.Offset, 2, false)
	away := dialFramed(t, a.url, "carol", nil)
	carolAt := away.position(t, "client")
	away.close()

	require.NoError(t, client.ConfigSet(t.Context(), "maxmemory", "1").Err())
	t.Cleanup(func() { _ = client.ConfigSet(context.Background(), "maxmemory", "0").Err() })
	result, err := b.SendToClient(t.Context(), "bob", []byte("while full"))
	require.NoError(t, err)
	assert.Equal(t, wsroute.Delivered, result.Status)
	assert.Zero(t, result.Offset, "not kept")
	f := bob.next(t)
	assert.Equal(t, "while full", f.Data)
	assert.Zero(t, f.Offset)
	_, err = b.SendToClient(t.Context(), "carol", []byte("missed while full"))
	require.NoError(t, err)
	assert.EqualValues(t, 2, b.Stats().HistoriesDropped)

	require.NoError(t, client.ConfigSet(t.Context(), "maxmemory", "0").Err())
	result, err = b.SendToClient(t.Context(), "bob", []byte("kept again"))
	require.NoError(t, err)
	assert.NotEqual(t, before[0].Epoch, result.Epoch, "a new epoch")
	p := bob.position(t, "client")
	assert.Equal(t, "epoch", p.Reason)
	assert.False(t, p.recovered())
	assert.Equal(t, "kept again", bob.next(t).Data)

	// carol, away, cannot recover around the message she missed.
	back := dialFramed(t, b.url, "carol", map[string]wsroute.Position{"client": pos(carolAt)})
	p = back.position(t, "client")
	assert.False(t, p.recovered())
	assert.Equal(t, "epoch", p.Reason)
}
