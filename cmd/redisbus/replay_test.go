package main

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
)

func TestDeadListsReasonOriginDeliveriesAndTheMessage(t *testing.T) {
	e := newEnv(t)
	msgs, sub := e.deadLetters("orders", 3)
	require.NoError(t, sub.Close())

	var letters []DeadLetter
	e.okJSON(&letters, "dead", "orders")
	require.Len(t, letters, 3)
	for _, d := range letters {
		want, ok := msgs[d.Message.UUID]
		require.True(t, ok, "dead letter %s decodes to a published message: %+v", d.ID, d.Message)
		assert.Equal(t, want.payload, *d.Message.Payload)
		assert.Equal(t, want.metadata, d.Message.Metadata, "without the dead-letter fields")
		assert.Equal(t, "nacked 1 time (MaxDeliveries 1)", d.Reason)
		assert.Equal(t, "orders", d.OriginStream)
		assert.Equal(t, "workers", d.Group)
		assert.Equal(t, "worker-1", d.Consumer)
		assert.Equal(t, 1, d.Deliveries)
		origin, err := e.client.XRange(context.Background(), "orders", d.OriginID, d.OriginID).Result()
		require.NoError(t, err)
		require.Len(t, origin, 1, "origin ID %s is the entry's ID in orders", d.OriginID)
		assert.Equal(t, d.Message.UUID, origin[0].Values[redisbus.StreamsFieldUUID])
	}

	e.okJSON(&letters, "dead", "orders", "--limit", "2")
	assert.Len(t, letters, 2)
	e.okJSON(&letters, "dead", "orders", "--reason", "^timeout")
	assert.Empty(t, letters)

	out := e.ok("dead", "orders")
	assert.Contains(t, out, "REASON")
	assert.Contains(t, out, "nacked 1 time (MaxDeliveries 1)")
	assert.Contains(t, out, "orders "+letters0(t, e).OriginID)

	e.xadd("quiet", "payload", "x")
	r := e.run("", "dead", "quiet")
	assert.Equal(t, 0, r.code, "a topic without dead letters has none: %s", r.stderr)
	assert.Contains(t, r.stderr, "no dead letters in quiet:dead")
}

func letters0(t *testing.T, e *env) DeadLetter {
	var letters []DeadLetter
	e.okJSON(&letters, "dead", "orders", "--limit", "1")
	require.Len(t, letters, 1)
	return letters[0]
}

func TestReplayReAddsTheOriginalFieldsAndDeletesTheDeadLetter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	msgs, sub := e.deadLetters("orders", 4)
	require.NoError(t, sub.Close())
	var letters []DeadLetter
	e.okJSON(&letters, "dead", "orders")
	require.Len(t, letters, 4)

	var r ReplayResult
	e.okJSON(&r, "replay", "orders", "--all", "--dry-run")
	assert.True(t, r.DryRun)
	assert.Equal(t, 0, r.Replayed, "nothing was replayed")
	assert.Equal(t, 4, r.WouldReplay)
	assert.Len(t, r.Entries, 4)
	assert.EqualValues(t, 4, e.client.XLen(ctx, "orders:dead").Val(), "a dry run changes nothing")
	out := e.ok("replay", "orders", "--all", "--dry-run")
	assert.Contains(t, out, "Dry run: would replay 4 dead letters from orders:dead to orders (4). Nothing changed.")

	// One by ID: the new entry has exactly the fields of the original.
	first := letters[0]
	last, err := lastID(ctx, e.client, "orders")
	require.NoError(t, err)
	out = e.ok("replay", "orders", first.ID)
	assert.Equal(t, "Replayed 1 dead letters from orders:dead to orders (1).\n", out)
	added, err := e.client.XRangeN(ctx, "orders", "("+last, "+", 10).Result()
	require.NoError(t, err)
	require.Len(t, added, 1)
	original, err := e.client.XRange(ctx, "orders", first.OriginID, first.OriginID).Result()
	require.NoError(t, err)
	assert.Equal(t, original[0].Values, added[0].Values, "the original's fields, without the dead-letter ones")
	assert.Empty(t, e.client.XRange(ctx, "orders:dead", first.ID, first.ID).Val(), "no longer a dead letter")

	// Filters that match nothing replay nothing.
	e.okJSON(&r, "replay", "orders", "--reason", "^timeout")
	assert.Equal(t, 0, r.Replayed)
	e.okJSON(&r, "replay", "orders", "--since", "1h", "--reason", regexp.QuoteMeta(first.Reason), "--dry-run")
	assert.Equal(t, 3, r.WouldReplay)

	// The rest to another stream.
	r = ReplayResult{}
	e.okJSON(&r, "replay", "orders", "--all", "--to", "orders-retry")
	assert.Equal(t, 3, r.Replayed)
	assert.Equal(t, map[string]int{"orders-retry": 3}, r.Streams)
	assert.EqualValues(t, 0, e.client.XLen(ctx, "orders:dead").Val())
	retried := e.uuids("orders-retry")
	assert.Len(t, retried, 3)
	for uuid := range retried {
		assert.Contains(t, msgs, uuid)
	}

	// An ID that is not (any more) a dead letter.
	res := e.run("", "replay", "orders", first.ID)
	assert.Equal(t, exitFailure, res.code)
	assert.Contains(t, res.stdout, "Not a dead letter (any more): "+first.ID)
	assert.Contains(t, res.stderr, "1 of the IDs given are not dead letters in orders:dead")
}

func TestReplayNeedsToBeToldWhat(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"replay", "orders"},
		{"replay", "orders", "1-0", "--all"},
		{"replay", "orders", "--all", "--reason", "x"},
		{"replay", "orders", "--reason", "("},
	} {
		r := e.run("", args...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
	e.xadd("orders:dead", "payload", "x")
	r := e.run("", "replay", "orders", "--all")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "1 dead letters do not say which stream they came from: replay them with --to STREAM")
	assert.EqualValues(t, 1, e.client.XLen(context.Background(), "orders:dead").Val())
}

// TestReplayKilledMidwayLosesNothing kills the console (SIGKILL) three
// times in the middle of a replay of many dead letters: each time, every
// message is in its stream or still a dead letter, never both. A last
// replay finishes the job.
func TestReplayKilledMidwayLosesNothing(t *testing.T) {
	e := newEnv(t)
	r := e.killMidReplay("orders", 20000, 0)
	assert.Empty(t, r.TwoStep)
}

// killMidReplay makes n dead letters of topic and replays them, killing
// the console three times on the way. After each kill, every message is
// back in topic or still a dead letter, and in both at most maxDuplicates
// times per kill. It returns the result of the replay that finished.
func (e *env) killMidReplay(topic string, n, maxDuplicates int) ReplayResult {
	t := e.t
	ctx := context.Background()
	msgs, sub := e.deadLetters(topic, n)
	require.NoError(t, sub.Close())
	require.NoError(t, e.client.XTrimMaxLen(ctx, topic, 0).Err(), "so that the stream holds only what was replayed")

	duplicated := func(back, dead map[string]int) int {
		both := 0
		for uuid := range msgs {
			require.Positive(t, back[uuid]+dead[uuid], "message %s is in one of the streams", uuid)
			if back[uuid]+dead[uuid] > 1 {
				both++
			}
		}
		return both
	}
	for kills, killAt := range []int64{int64(n)/10 + 137, int64(n)/3 + 61, 2*int64(n)/3 + 7} {
		// One entry per round trip, so that the kill lands among them.
		cmd := exec.Command(binary, "--redis", e.url, "replay", topic, "--all", "--batch", "1")
		require.NoError(t, cmd.Start())
		require.Eventually(t, func() bool { return e.client.XLen(ctx, topic).Val() >= killAt }, 30*time.Second, time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()

		back, dead := e.uuids(topic), e.uuids(topic+":dead")
		require.NotEmpty(t, dead, "killed before it finished")
		both := duplicated(back, dead)
		t.Logf("killed with %d of %d replayed, %d in both streams", len(back), n, both)
		require.LessOrEqual(t, both, (kills+1)*maxDuplicates)
	}

	var r ReplayResult
	e.okJSON(&r, "replay", topic, "--all")
	back := e.uuids(topic)
	assert.Len(t, back, n)
	assert.LessOrEqual(t, duplicated(back, nil), 3*maxDuplicates)
	assert.EqualValues(t, 0, e.client.XLen(ctx, topic+":dead").Val())
	return r
}

func TestPurgeAsksFirst(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, sub := e.deadLetters("orders", 3)
	require.NoError(t, sub.Close())
	other := e.xadd("orders:dead", "payload", "x", redisbus.DeadLetterFieldReason, "cannot decode entry: bad")

	r := e.run("n\n", "purge", "orders", "--all")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "Delete 4 dead letters from orders:dead? [y/N]")
	assert.Contains(t, r.stderr, "not confirmed: nothing deleted")
	r = e.run("", "purge", "orders", "--all")
	assert.Equal(t, exitFailure, r.code, "no answer is no")
	assert.EqualValues(t, 4, e.client.XLen(ctx, "orders:dead").Val())

	r = e.run("y\n", "purge", "orders", other)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "Deleted 1 dead letters from orders:dead.\n", r.stdout)
	assert.Empty(t, e.client.XRange(ctx, "orders:dead", other, other).Val())

	var purged map[string]any
	e.okJSON(&purged, "purge", "orders", "--reason", "^nacked", "--yes")
	assert.EqualValues(t, 3, purged["deleted"])
	assert.EqualValues(t, 0, e.client.XLen(ctx, "orders:dead").Val())

	r = e.run("", "purge", "orders")
	assert.Equal(t, exitUsage, r.code)
	assert.True(t, strings.Contains(r.stderr, "say which dead letters"), r.stderr)
}
