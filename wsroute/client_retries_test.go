package wsroute_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// A send that Redis routed but answered late is not routed again: go-redis
// would resend route.lua after its read timeout, and the client would get
// the frame twice.
func TestSendWithALateReplyIsNotRepeated(t *testing.T) {
	prefix := pubsubtest.Topic(t) + ":"
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	slowClient := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = slowClient.Close() })
	sender := startNode(t, slowClient, wsroute.Config{Prefix: prefix, NodeID: "sender"})
	holder := startNode(t, pubsubtest.NewClient(t), wsroute.Config{Prefix: prefix, NodeID: "holder"})
	bob := holder.connect(t, "bob")

	_, err := sender.SendToClient(t.Context(), "bob", []byte("warm-up"))
	require.NoError(t, err)
	require.Equal(t, "warm-up", read(t, bob))
	proxy.DelayOpenConnections(700 * time.Millisecond)
	t.Cleanup(func() { proxy.DelayOpenConnections(0) }) // before the nodes close

	_, err = sender.SendToClient(t.Context(), "bob", []byte("once"))
	require.Error(t, err, "the sender cannot know whether Redis routed it")
	// Redis delivers a node's messages in order: once the marker is in,
	// every copy routed before it is too.
	_, err = holder.SendToClient(context.Background(), "bob", []byte("marker"))
	require.NoError(t, err)
	copies := 0
	for frame := read(t, bob); frame != "marker"; frame = read(t, bob) {
		if frame == "once" {
			copies++
		}
	}
	assert.Equal(t, 1, copies)
}
