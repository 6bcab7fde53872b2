package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPendingListsStuckEntriesAndClaimMovesThem(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for range 4 {
		e.xadd("jobs", "payload", "work")
	}
	ids := e.readGroup("jobs", "workers", "stuck", 4)

	var pending []PendingEntry
	e.okJSON(&pending, "pending", "jobs", "workers")
	require.Len(t, pending, 4)
	for i, p := range pending {
		assert.Equal(t, ids[i], p.ID)
		assert.Equal(t, "stuck", p.Consumer)
		assert.EqualValues(t, 1, p.Deliveries)
	}
	out := e.ok("pending", "jobs", "workers")
	assert.Contains(t, out, "CONSUMER")
	assert.Contains(t, out, ids[0]+"  stuck")

	// By ID.
	var claimed struct {
		Consumer string   `json:"consumer"`
		Claimed  []string `json:"claimed"`
	}
	e.okJSON(&claimed, "claim", "jobs", "workers", "--to", "healthy", ids[0])
	assert.Equal(t, []string{ids[0]}, claimed.Claimed)
	e.okJSON(&pending, "pending", "jobs", "workers", "--consumer", "healthy")
	require.Len(t, pending, 1)
	assert.EqualValues(t, 1, pending[0].Deliveries, "claiming does not count as a delivery")

	// Every entry idle long enough: none is idle for an hour; then, once
	// all have been idle a millisecond, one consumer's, then all.
	e.okJSON(&claimed, "claim", "jobs", "workers", "--to", "healthy", "--min-idle", "1h")
	assert.Empty(t, claimed.Claimed)
	require.Eventually(t, func() bool {
		p, err := e.client.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "jobs", Group: "workers", Idle: time.Millisecond, Start: "-", End: "+", Count: 10}).Result()
		return err == nil && len(p) == 4
	}, 10*time.Second, time.Millisecond)
	e.okJSON(&claimed, "claim", "jobs", "workers", "--to", "healthy", "--min-idle", "1ms", "--from", "stuck")
	assert.Equal(t, ids[1:], claimed.Claimed)
	e.okJSON(&pending, "pending", "jobs", "workers", "--consumer", "stuck")
	assert.Empty(t, pending)
	require.Eventually(t, func() bool {
		p, err := e.client.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "jobs", Group: "workers", Idle: time.Millisecond, Start: "-", End: "+", Count: 10}).Result()
		return err == nil && len(p) == 4
	}, 10*time.Second, time.Millisecond)
	e.okJSON(&claimed, "claim", "jobs", "workers", "--to", "other", "--min-idle", "1ms")
	assert.Equal(t, ids, claimed.Claimed, "XAUTOCLAIM: every consumer's")

	r := e.run("", "claim", "jobs", "workers", ids[0])
	assert.Equal(t, exitUsage, r.code, "without --to")
	r = e.run("", "claim", "jobs", "workers", "--to", "x")
	assert.Equal(t, exitUsage, r.code, "without IDs or --min-idle")
}
