package wsroute_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// Nodes whose client is a Sentinel failover client route again by
// themselves after a graceful failover and after the primary was killed:
// the new primary (a replica of the old one, or one that lost the last
// writes) holds the registry, or the nodes write it again, and their
// channels are subscribed on it.
func TestNodesCarryOnThroughSentinelFailovers(t *testing.T) {
	sentinels := pubsubtest.StartSentinels(t, 3)
	client := sentinels.FailoverClient(t)
	config := wsroute.Config{NodeTTL: time.Second}
	config.NodeID = "a"
	a := startNode(t, client, config)
	config.NodeID = "b"
	b := startNode(t, client, config)
	bob := b.connect(t, "bob")

	for _, failover := range []struct {
		what string
		do   func(testing.TB)
	}{
		{"a graceful failover", sentinels.Failover},
		{"the primary killed", sentinels.KillPrimary},
	} {
		start := time.Now()
		failover.do(t)
		text := "after " + failover.what
		require.Eventually(t, func() bool {
			result, err := a.SendToClient(context.Background(), "bob", []byte(text))
			return err == nil && result.Status == wsroute.Delivered
		}, recoveryBound, 20*time.Millisecond, "routing after %s", failover.what)
		t.Logf("%s: routing delivered again %s after it began", failover.what, time.Since(start).Round(time.Millisecond))
		// What an earlier attempt delivered may come first; the last one is this text.
		for {
			if got := read(t, bob); got == text {
				break
			}
		}
	}
	assert.Positive(t, b.Stats().Delivered)
}
