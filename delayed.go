package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/sendonce"
)

// Delayed messages. A message published to a StreamsPublisher with
// Watermill's delay metadata (delay.Message, delay.WithContext with
// delay.NewPublisher, middleware.DelayOnError) whose time is still ahead
// is not added to its stream: it is stored, in the same Publish, in the
// topic's delayed set in Redis, a sorted set by due time, in the stream's
// hash slot. Every StreamsSubscriber of the topic moves the messages that
// are due into the stream (lua/delayed_move.lua), oldest first, each in one
// atomic step, so that they are moved exactly once whatever number of
// processes move them, however many die mid-way; it wakes when one falls
// due, and when a publisher schedules one due before all the others (a
// message on the topic's wake channel), and looks at least every
// DelayedPollInterval in case such a message was lost.

// fieldPriorDeliveries is an entry field of a copy rescheduled by a Nack
// with a delay (see streamsTopic.nacked): how many times the message had
// reached a handler before, so that MaxDeliveries counts them too.
//
// It and fieldForGroup are entry fields beside the Marshaler's, not
// metadata: a producer cannot set them through Watermill (metadata of that
// name is the application's, and means nothing here), and a dead letter
// leaves them out, so that a replayed dead letter is a new message for
// every group, with every delivery ahead of it.
const fieldPriorDeliveries = "redisbus_prior_deliveries"

// metadataDue records the due time a publisher worked out for a message
// whose until has no fraction of a second ("<until>|<for>|<Unix ms>"), so
// that the message published again with the same delay (Watermill's
// requeuer, after its delay in a poison topic) is due then, not up to a
// second later.
const metadataDue = "redisbus_due"

// fieldForGroup is an entry field of a rescheduled copy: the consumer
// group whose handler nacked it with a delay. Other groups and fan-out
// subscribers skip it: they had the message already.
const fieldForGroup = "redisbus_for_group"

// delayedUntilKey is Watermill's metadata of a delayed message's due time.
const (
	delayedUntilKey = delay.DelayedUntilKey
	delayedForKey   = delay.DelayedForKey
)

// dueOf returns when msg asks to enter its stream, and whether it asks:
// Watermill's _watermill_delayed_until, an RFC 3339 time. Watermill's
// delay package writes it to the second, truncated, so a message it
// delays by 300ms would be due at once or up to a second early; with
// _watermill_delayed_for beside it (written at the same moment), the due
// time is now + that duration, kept within the second the until names
// (a message published again long after it was delayed is not delayed
// again). A time with a fraction of a second is taken as it is.
func dueOf(msg *message.Message, now time.Time) (time.Time, bool, error) {
	return dueOfStamped(msg, now, true)
}

// dueOfStamped is dueOf, ignoring metadataDue when stamped is false: a
// handler that nacks a message with a delay has just set it, however like
// the one it arrived with it looks.
func dueOfStamped(msg *message.Message, now time.Time, stamped bool) (time.Time, bool, error) {
	until := msg.Metadata.Get(delayedUntilKey)
	if until == "" {
		return time.Time{}, false, nil
	}
	due, err := time.Parse(time.RFC3339Nano, until)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("redisbus: message %s: metadata %s is %q, not an RFC 3339 time", msg.UUID, delayedUntilKey, until)
	}
	if strings.Contains(until, ".") {
		return due, true, nil
	}
	delayedFor := msg.Metadata.Get(delayedForKey)
	// Scheduled before (by a publisher that knew the due time to the
	// millisecond): that time, as long as the delay is the same one.
	if stamp, ok := strings.CutPrefix(msg.Metadata.Get(metadataDue), until+"|"+delayedFor+"|"); ok && stamped {
		if ms, err := strconv.ParseInt(stamp, 10, 64); err == nil {
			return time.UnixMilli(ms), true, nil
		}
	}
	if d, err := time.ParseDuration(delayedFor); err == nil {
		switch precise, latest := now.Add(d), due.Add(time.Second-time.Millisecond); {
		case precise.After(latest):
			due = latest
		case precise.After(due):
			due = precise
		}
	}
	return due, true, nil
}

// DelayedKey names the sorted set where a topic's delayed messages wait
// (score: the due time in Unix milliseconds), for monitoring: ZCARD counts
// them, ZRANGE key 0 0 WITHSCORES gives the next due. It is in the
// stream's hash slot on Redis Cluster.
func DelayedKey(topic string) string { return delayedKey(topic) }

// delayedKey is a topic's delayed set, in its stream's hash slot. The
// stream's name at the end tells "orders" from "{orders}", which share a
// slot prefix.
func delayedKey(stream string) string {
	return sameSlotPrefix(stream) + ":redisbus:delayed:" + stream
}

// delayedWakeChannel is where publishers tell a topic's movers that a
// message falls due before the others.
func delayedWakeChannel(stream string) string {
	return sameSlotPrefix(stream) + ":redisbus:delayed-wake:" + stream
}

// maxScheduleBatch bounds the messages one script call schedules: Lua
// unpacks the arguments onto its stack, which holds some 8,000.
const maxScheduleBatch = 1000

// delayedMember encodes an entry's fields as a member of the delayed set:
// 32 hex characters, the time it was scheduled (ns) and 8 random bytes,
// so that members never collide and messages due at the same time move in
// the order they were scheduled; then each field as "<length>:<bytes>",
// which the move script splits with plain string functions (any Lua of
// any Redis, embedded ones included) and gives to XADD.
func delayedMember(fields []any) []byte {
	var prefix [16]byte
	binary.BigEndian.PutUint64(prefix[:8], uint64(time.Now().UnixNano()))
	_, _ = rand.Read(prefix[8:])
	buf := hex.AppendEncode(make([]byte, 0, 64), prefix[:])
	for _, f := range fields {
		v := fieldString(f)
		buf = append(strconv.AppendInt(buf, int64(len(v)), 10), ':')
		buf = append(buf, v...)
	}
	return buf
}

// fieldString formats a field as go-redis writes it in a command.
func fieldString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case bool:
		if v {
			return "1"
		}
		return "0"
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// scheduled is a message to store in a delayed set.
type scheduled struct {
	due    time.Time
	fields []any
	// mark is the message's PublishOnce mark (dedupKey); "" for Publish.
	mark string
}

// scheduleScript stores delayed messages; go-redis must not send it twice
// (a retry after a lost reply would store them twice).
var scheduleScript = sendonce.NewScript(delayedScheduleSource)

// schedule stores msgs in topic's delayed set, in batches of
// maxScheduleBatch; with WaitReplicas, each batch is confirmed by WAIT on
// the same connection. With a window (PublishOnce; every message has a
// mark), a message marked within it is not stored: schedule returns, per
// message, whether it was, and what its mark held (see
// delayed_schedule.lua).
func schedule(ctx context.Context, client redis.UniversalClient, retries sendonce.Policy, wait *replicaWait, topic string, msgs []scheduled, window time.Duration) ([]PublishedOnce, error) {
	publish := "PUBLISH"
	if _, cluster := client.(*redis.ClusterClient); cluster {
		publish = "SPUBLISH"
	}
	var results []PublishedOnce
	for len(msgs) > 0 {
		batch := msgs[:min(len(msgs), maxScheduleBatch)]
		msgs = msgs[len(batch):]
		keys := make([]string, 1, 1+len(batch))
		keys[0] = delayedKey(topic)
		args := make([]any, 0, 3+2*len(batch))
		args = append(args, delayedWakeChannel(topic), publish, window.Milliseconds())
		for _, m := range batch {
			// Rounded up: moved once Redis' clock, in whole milliseconds,
			// has reached it, never before.
			dueMs := m.due.UnixMilli() // not UnixNano: it overflows after 2262
			if m.due.Nanosecond()%int(time.Millisecond) != 0 {
				dueMs++
			}
			args = append(args, dueMs, delayedMember(m.fields))
			if window > 0 {
				keys = append(keys, m.mark)
			}
		}
		var run *redis.Cmd
		if wait == nil {
			run = scheduleScript.Run(ctx, retries, client, keys, args...)
		} else {
			var confirm *redis.IntCmd
			_, _ = client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				evalArgs := append([]any{"eval", delayedScheduleSource, len(keys)}, stringsToAny(keys)...)
				run = redis.NewCmd(ctx, append(evalArgs, args...)...)
				_ = pipe.Process(ctx, sendonce.Cmd{Cmd: run})
				confirm = redis.NewIntCmd(ctx, "wait", wait.replicas, wait.timeout.Milliseconds())
				_ = pipe.Process(ctx, confirm)
				return nil
			})
			if err := run.Err(); err != nil {
				return nil, err
			}
			if err := wait.confirmed(confirm); err != nil {
				return nil, err
			}
		}
		found, err := run.Slice()
		if err != nil {
			return nil, err
		}
		for _, earlier := range found {
			id, duplicate := earlier.(string)
			results = append(results, PublishedOnce{ID: id, Duplicate: duplicate})
		}
	}
	return results, nil
}

func stringsToAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

// moveReply is what delayed_move.lua returns.
type moveReply struct {
	moved    int
	nextDue  time.Time // zero: nothing left
	now      time.Time // Redis' clock
	lateness []time.Duration
}

func parseMoveReply(raw []any) (moveReply, error) {
	var r moveReply
	if len(raw) < 3 {
		return r, fmt.Errorf("redisbus: unexpected reply from delayed_move.lua: %v", raw)
	}
	moved, _ := raw[0].(int64)
	next, _ := raw[1].(string)
	now, _ := raw[2].(int64)
	r.moved, r.now = int(moved), time.UnixMilli(now)
	if next != "" {
		ms, err := strconv.ParseFloat(next, 64)
		if err != nil {
			return r, fmt.Errorf("redisbus: unexpected due time from delayed_move.lua: %q", next)
		}
		r.nextDue = time.UnixMilli(int64(ms))
	}
	for _, v := range raw[3:] {
		late, _ := v.(int64)
		r.lateness = append(r.lateness, time.Duration(late)*time.Millisecond)
	}
	return r, nil
}
