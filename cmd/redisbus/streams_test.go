package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStreamsListsTopicsWithTheirDeadLettersAndNothingElse(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, sub := e.deadLetters("orders", 3)
	defer sub.Close()
	// A second group with two entries delivered and not acked.
	e.readGroup("orders", "audit", "a1", 2)
	// A topic whose stream is gone and whose dead letters remain, and
	// keys of other types.
	e.xadd("gone:dead", "payload", "x", "redisbus_reason", "r")
	require.NoError(t, e.client.Set(ctx, "config", "1", 0).Err())
	leases, err := e.client.Keys(ctx, "*redisbus:consumer*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, leases, "the subscriber's consumer-name lease is in Redis")

	var topics []StreamSummary
	e.okJSON(&topics, "streams")
	require.Len(t, topics, 2, "%+v", topics)
	gone, orders := topics[0], topics[1]
	assert.Equal(t, "gone", gone.Stream)
	assert.False(t, gone.Exists)
	assert.EqualValues(t, 1, gone.DeadLetters)

	assert.Equal(t, "orders", orders.Stream)
	assert.True(t, orders.Exists)
	assert.EqualValues(t, 3, orders.Length)
	assert.EqualValues(t, 3, orders.DeadLetters)
	assert.Equal(t, "orders:dead", orders.DeadLetterStream)
	assert.EqualValues(t, 2, orders.Pending, "the audit group's two")
	assert.EqualValues(t, 1, orders.Lag, "audit has read two of three")
	assert.Positive(t, orders.OldestPendingAgeMS)
	require.Len(t, orders.Groups, 2)
	assert.Equal(t, "audit", orders.Groups[0].Name)
	assert.EqualValues(t, 2, orders.Groups[0].Pending)
	assert.Equal(t, "workers", orders.Groups[1].Name)
	assert.EqualValues(t, 0, orders.Groups[1].Pending, "dead letters are acked")

	table := e.ok("streams")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 3, table)
	assert.Equal(t, []string{"STREAM", "LENGTH", "GROUPS", "LAG", "PENDING", "OLDEST", "PENDING", "DEAD"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"gone", "-", "-", "-", "-", "-", "1"}, strings.Fields(lines[1]))
	assert.Equal(t, []string{"orders", "3", "2", "1", "2"}, strings.Fields(lines[2])[:5])
	assert.Equal(t, "3", strings.Fields(lines[2])[6])

	e.okJSON(&topics, "streams", "--match", "ord*")
	require.Len(t, topics, 1)
	assert.Equal(t, "orders", topics[0].Stream)
	assert.EqualValues(t, 3, topics[0].DeadLetters, "the dead-letter stream is counted even when --match leaves it out")
}

func TestStreamShowsGroupsConsumersAndLastEntries(t *testing.T) {
	e := newEnv(t)
	msgs, sub := e.deadLetters("orders", 3)
	defer sub.Close()
	e.readGroup("orders", "audit", "a1", 2)

	var d StreamDetail
	e.okJSON(&d, "stream", "orders", "--last", "2")
	assert.EqualValues(t, 3, d.Length)
	assert.EqualValues(t, 3, d.DeadLetters)
	require.Len(t, d.LastEntries, 2)
	assert.Equal(t, d.LastID, d.LastEntries[0].ID, "newest first")
	for _, entry := range d.LastEntries {
		want, ok := msgs[entry.UUID]
		require.True(t, ok, "entry %s decodes to a published message", entry.ID)
		assert.Equal(t, want.payload, *entry.Payload)
		assert.Equal(t, want.metadata, entry.Metadata)
	}
	var audit *Consumer
	for i, c := range d.Consumers {
		if c.Group == "audit" {
			audit = &d.Consumers[i]
		}
	}
	require.NotNil(t, audit, "%+v", d.Consumers)
	assert.Equal(t, "a1", audit.Name)
	assert.EqualValues(t, 2, audit.Pending)

	out := e.ok("stream", "orders")
	assert.Contains(t, out, "Stream orders: 3 entries")
	assert.Contains(t, out, "a1")
	assert.Contains(t, out, `tenant="t`)
}
