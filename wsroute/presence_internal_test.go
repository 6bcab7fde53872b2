package wsroute

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// A dead node's entries in a large room (a hash Redis keeps as a hash
// table, not a listpack) go in batches, each making progress: the
// batches delete what they scanned, which leaves the buckets a scan from
// the start visits first empty, and a single HSCAN step from the start
// then finds nothing though entries remain.
func TestReapEmptiesALargeRoomInBatches(t *testing.T) {
	client := pubsubtest.NewClient(t)
	prefix := pubsubtest.Topic(t) + ":"
	k := keys{prefix: prefix}
	const entries, incarnation, room = 20_000, "dead-incarnation", "stadium"
	_, err := client.Pipelined(t.Context(), func(pipe redis.Pipeliner) error {
		for i := range entries {
			client := fmt.Sprintf("client-%05d", i)
			pipe.HSet(t.Context(), k.presenceOf(incarnation, room), fmt.Sprintf("connection-%05d", i), fmt.Sprintf("%d\n%s", len(client), client))
			pipe.HSet(t.Context(), k.presenceCount(room), client, 1)
		}
		pipe.HSet(t.Context(), k.presence(room), incarnation, "dead")
		return nil
	})
	require.NoError(t, err)
	encoding, err := client.ObjectEncoding(t.Context(), k.presenceOf(incarnation, room)).Result()
	require.NoError(t, err)
	require.Equal(t, "hashtable", encoding)

	// The query's first step, as a node asking about the room runs it.
	removed, batches := 0, 0
	for removed < entries {
		reply, err := presenceQueryScript.Run(t.Context(), client, []string{k.presence(room), k.presenceEvents()},
			prefix, room, reapBudget, 0, "id").Slice()
		require.NoError(t, err)
		batch := int(reply[0].(int64))
		require.Positive(t, batch, "a batch removed nothing, with %d entries left", entries-removed)
		require.LessOrEqual(t, batch, reapBudget+1, "a batch keeps to the budget")
		removed += batch
		batches++
	}
	assert.Equal(t, entries, removed)
	left, err := client.Exists(t.Context(), k.presence(room), k.presenceCount(room), k.presenceOf(incarnation, room)).Result()
	require.NoError(t, err)
	assert.Zero(t, left, "the room's presence is gone with its last entry")
	t.Logf("%d entries removed in %d batches", removed, batches)
}
