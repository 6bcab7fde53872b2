package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// streamsTopic is one stream a StreamsSubscriber consumes: a reader that
// fills the inbox in batches, a maintenance loop that claims, renews and
// tidies, and the inbox that hands messages to Subscribe calls. It
// implements inboxOwner.
type streamsTopic struct {
	s      *StreamsSubscriber
	name   string
	logger watermill.LoggerAdapter
	inbox  *topicInbox

	ready   chan struct{} // closed when init is done; initErr says how
	initErr error

	consumers atomic.Int32
	attached  chan struct{} // capacity 1: consumers went from none to some

	// rereadPending asks the reader to read this consumer's pending list
	// again: a claim failed, and its entries may be pending with us unseen.
	rereadPending atomic.Bool

	// held maps the IDs of entries in memory (read and not yet acked) to
	// their entries, so that an entry read twice (own pending list, claims)
	// is delivered once, and so they can be renewed.
	heldMu sync.Mutex
	held   map[string]*inboxEntry

	// lastID is a fan-out subscription's position: the last entry ID read.
	// Reader only.
	lastID string
}

func newStreamsTopic(s *StreamsSubscriber, name string) *streamsTopic {
	t := &streamsTopic{
		s:        s,
		name:     name,
		logger:   s.logger.With(watermill.LogFields{"topic": name}),
		ready:    make(chan struct{}),
		attached: make(chan struct{}, 1),
		held:     map[string]*inboxEntry{},
	}
	t.inbox = newTopicInbox(t, inboxConfig{
		limit:       s.config.Prefetch,
		overflow:    overflowKeep,
		maxInFlight: s.config.MaxInFlight,
	}, s.closing)
	return t
}

func (t *streamsTopic) grouped() bool { return t.s.config.ConsumerGroup != "" }

// init creates the consumer group, or finds where fan-out starts.
func (t *streamsTopic) init(ctx context.Context) error {
	if t.grouped() {
		return t.createGroup(ctx, t.s.config.StartID)
	}
	t.lastID = t.s.config.StartID
	if t.lastID != "$" {
		return nil
	}
	// Pin "$" down now, so that whatever is published after Subscribe
	// returns is read.
	info, err := t.s.config.Client.XInfoStream(ctx, t.name).Result()
	switch {
	case err == nil:
		t.lastID = info.LastGeneratedID
	case isRedisError(err, "ERR no such key"):
		t.lastID = "0-0"
	default:
		return err
	}
	return nil
}

func (t *streamsTopic) createGroup(ctx context.Context, start string) error {
	err := t.s.config.Client.XGroupCreateMkStream(ctx, t.name, t.s.config.ConsumerGroup, start).Err()
	if err != nil && !isRedisError(err, "BUSYGROUP") {
		return err
	}
	return nil
}

// start launches the topic's goroutines. The caller holds s.mu.
func (t *streamsTopic) start() {
	t.s.wg.Go(t.inbox.run)
	t.s.wg.Go(t.read)
	if t.grouped() {
		t.s.wg.Go(t.maintain)
	}
}

func (t *streamsTopic) closing() <-chan struct{} { return t.s.closing }

func (t *streamsTopic) isClosing() bool {
	select {
	case <-t.s.closing:
		return true
	default:
		return false
	}
}

// waitForRoom blocks until someone consumes the topic and the inbox runs
// low, and returns the room it has; 0 means the subscriber is closing.
// Reading only for attached consumers keeps entries in the group for others
// while nobody here consumes.
func (t *streamsTopic) waitForRoom() int {
	for {
		// Read again only when what is buffered runs low: under load the
		// reads then come in full batches, while an idle consumer (nothing
		// buffered) still gets new entries at once.
		if t.consumers.Load() > 0 && t.inbox.buffered() < t.s.config.ReadBatchSize {
			if free := t.inbox.free(); free > 0 {
				return free
			}
		}
		select {
		case <-t.attached:
		case <-t.inbox.space:
		case <-t.closing():
			return 0
		}
	}
}

// read fills the inbox until Close. In a group it first reads the entries
// pending with this consumer (left by an earlier run, or whose read reply
// was lost to a broken connection), then new ones.
func (t *streamsTopic) read() {
	ownPending := t.grouped()
	cursor := "0"
	backoff := minReconnectBackoff
	for {
		room := t.waitForRoom()
		if room == 0 {
			return
		}
		count := int64(min(room, t.s.config.ReadBatchSize))
		if t.rereadPending.Swap(false) {
			ownPending, cursor = true, "0"
		}

		var entries []redis.XMessage
		var err error
		switch {
		case !t.grouped():
			entries, err = t.readFanOut(count)
		case ownPending:
			entries, err = t.readGroup(cursor, count, -1)
		default:
			entries, err = t.readGroup(">", count, t.s.config.BlockTime)
		}
		if t.isClosing() {
			return
		}
		if err != nil {
			t.readFailed(err)
			if !sleep(backoff, t.closing()) {
				return
			}
			backoff = min(2*backoff, maxReconnectBackoff)
			// Whatever the failed read delivered is pending with us now.
			ownPending, cursor = t.grouped(), "0"
			continue
		}
		backoff = minReconnectBackoff

		switch {
		case ownPending && len(entries) == 0:
			ownPending = false
		case ownPending:
			cursor = entries[len(entries)-1].ID
			t.accept(entries, true)
		default:
			if !t.grouped() && len(entries) > 0 {
				t.lastID = entries[len(entries)-1].ID
			}
			t.accept(entries, false)
		}
	}
}

func (t *streamsTopic) readGroup(id string, count int64, block time.Duration) ([]redis.XMessage, error) {
	streams, err := t.s.blocking.XReadGroup(context.Background(), &redis.XReadGroupArgs{
		Group:    t.s.config.ConsumerGroup,
		Consumer: t.s.config.Consumer,
		Streams:  []string{t.name, id},
		Count:    count,
		Block:    block,
	}).Result()
	return firstStream(streams, err)
}

func (t *streamsTopic) readFanOut(count int64) ([]redis.XMessage, error) {
	streams, err := t.s.blocking.XRead(context.Background(), &redis.XReadArgs{
		Streams: []string{t.name, t.lastID},
		Count:   count,
		Block:   t.s.config.BlockTime,
	}).Result()
	return firstStream(streams, err)
}

func firstStream(streams []redis.XStream, err error) ([]redis.XMessage, error) {
	if errors.Is(err, redis.Nil) {
		return nil, nil // the block timed out
	}
	if err != nil || len(streams) == 0 {
		return nil, err
	}
	return streams[0].Messages, nil
}

// readFailed logs a read error and repairs what it can: a group or stream
// deleted under a running subscriber is recreated.
func (t *streamsTopic) readFailed(err error) {
	if !isRedisError(err, "NOGROUP") {
		t.logger.Error("Cannot read stream, retrying", err, nil)
		return
	}
	// The new group starts at the beginning of the stream. If only the group
	// was deleted, its entries are delivered again; if the stream was
	// deleted too, a new one may reuse the IDs of the old (they are
	// time-based), so starting after the last entry read could skip new
	// entries. At-least-once prefers the duplicates.
	t.logger.Error("Consumer group or stream disappeared; recreating the group at the start of the stream", err, nil)
	if err := t.createGroup(context.Background(), "0"); err != nil {
		t.logger.Error("Cannot recreate consumer group", err, nil)
	}
}

// accept queues entries read from Redis. Entries that were delivered before
// (own pending list, claims) carry the group's delivery count; those beyond
// MaxDeliveries, and entries that cannot be decoded, go to the dead-letter
// stream instead.
func (t *streamsTopic) accept(entries []redis.XMessage, delivered bool) {
	t.s.stats.read.Add(uint64(len(entries)))
	entries = slices.DeleteFunc(entries, func(xm redis.XMessage) bool { return t.isHeld(xm.ID) })
	var counts map[string]int
	if delivered && len(entries) > 0 {
		counts = t.deliveryCounts(entries)
	}
	for _, xm := range entries {
		if xm.Values == nil {
			// Trimmed away while pending: nothing left to deliver.
			t.s.acker.ack(t, xm.ID)
			continue
		}
		deliveries := 1
		if counts != nil {
			n, pending := counts[xm.ID]
			if !pending {
				continue // acked or claimed by another consumer meanwhile
			}
			deliveries = n
		}
		msg, err := t.s.config.Marshaler.Unmarshal(t.name, xm.Values)
		if err == nil && msg == nil {
			err = errNoMessage
		}
		if err != nil {
			t.deadLetter(xm.ID, fieldsOf(xm.Values), deliveries, "cannot decode entry: "+err.Error())
			continue
		}
		if max := t.s.config.MaxDeliveries; max > 0 && deliveries > max {
			t.deadLetter(xm.ID, fieldsOf(xm.Values), deliveries,
				fmt.Sprintf("delivered %d times, more than MaxDeliveries (%d)", deliveries, max))
			continue
		}
		e := &inboxEntry{msg: msg, id: xm.ID, deliveries: deliveries}
		t.hold(e)
		t.inbox.push(e)
	}
}

// deliveryCounts asks the group how often each entry has been delivered.
func (t *streamsTopic) deliveryCounts(entries []redis.XMessage) map[string]int {
	ctx := context.Background()
	cmds := make([]*redis.XPendingExtCmd, len(entries))
	_, err := t.s.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, xm := range entries {
			cmds[i] = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{
				Stream: t.name, Group: t.s.config.ConsumerGroup,
				Start: xm.ID, End: xm.ID, Count: 1, Consumer: t.s.config.Consumer,
			})
		}
		return nil
	})
	counts := make(map[string]int, len(entries))
	if err != nil && !errors.Is(err, redis.Nil) {
		// Without counts, treat them as delivered once more than before:
		// the entries are ours, and losing the count only delays a
		// dead-letter.
		t.logger.Error("Cannot read delivery counts", err, nil)
		for _, xm := range entries {
			counts[xm.ID] = 1
		}
		return counts
	}
	for _, cmd := range cmds {
		for _, p := range cmd.Val() {
			counts[p.ID] = int(p.RetryCount)
		}
	}
	return counts
}

// fieldsOf turns entry values back into XADD fields, for the dead-letter
// stream.
func fieldsOf(values map[string]any) []any {
	fields := make([]any, 0, 2*len(values))
	for k, v := range values {
		fields = append(fields, k, v)
	}
	return fields
}

func (t *streamsTopic) deadLetter(id string, fields []any, deliveries int, reason string) {
	t.unhold(id)
	t.s.stats.deadLettered.Add(1)
	t.logger.Error("Moving entry to the dead-letter stream", nil, watermill.LogFields{
		"entry_id": id, "reason": reason, "dead_letter_stream": t.s.config.DeadLetterTopic(t.name),
	})
	t.s.acker.deadLetter(t, id, fields, deliveries, reason)
}

func (t *streamsTopic) hold(e *inboxEntry) {
	t.heldMu.Lock()
	t.held[e.id] = e
	t.heldMu.Unlock()
}

func (t *streamsTopic) unhold(id string) {
	t.heldMu.Lock()
	delete(t.held, id)
	t.heldMu.Unlock()
}

func (t *streamsTopic) isHeld(id string) bool {
	t.heldMu.Lock()
	defer t.heldMu.Unlock()
	_, ok := t.held[id]
	return ok
}

func (t *streamsTopic) heldCount() int {
	t.heldMu.Lock()
	defer t.heldMu.Unlock()
	return len(t.held)
}

func (t *streamsTopic) heldIDs() []string {
	t.heldMu.Lock()
	defer t.heldMu.Unlock()
	ids := make([]string, 0, len(t.held))
	for id := range t.held {
		ids = append(ids, id)
	}
	return ids
}

// maintain claims entries of dead consumers, renews the entries this
// subscriber holds and removes idle consumers, until Close.
func (t *streamsTopic) maintain() {
	cfg := t.s.config
	claim := time.NewTicker(cfg.ClaimInterval)
	defer claim.Stop()
	renew := time.NewTicker(max(cfg.ClaimMinIdle/3, time.Millisecond))
	defer renew.Stop()
	var tidy <-chan time.Time
	if cfg.ConsumerIdleTimeout > 0 {
		ticker := time.NewTicker(min(cfg.ConsumerIdleTimeout/2, 10*time.Minute))
		defer ticker.Stop()
		tidy = ticker.C
	}
	for {
		select {
		case <-claim.C:
			t.claim()
		case <-renew.C:
			t.renew()
		case <-tidy:
			t.removeIdleConsumers()
		case <-t.closing():
			return
		}
	}
}

// claim takes over entries that have been pending with any consumer for
// longer than ClaimMinIdle, as far as the inbox has room and someone here
// consumes the topic. Entries this subscriber holds are renewed and so never
// idle that long.
func (t *streamsTopic) claim() {
	cursor := "0-0"
	for range 16 { // a bounded amount of work per tick
		if t.consumers.Load() == 0 {
			return
		}
		room := t.inbox.free()
		if room <= 0 {
			return
		}
		entries, next, err := t.s.blocking.XAutoClaim(context.Background(), &redis.XAutoClaimArgs{
			Stream:   t.name,
			Group:    t.s.config.ConsumerGroup,
			Consumer: t.s.config.Consumer,
			MinIdle:  t.s.config.ClaimMinIdle,
			Start:    cursor,
			Count:    int64(min(room, t.s.config.ReadBatchSize)),
		}).Result()
		if err != nil {
			if !t.isClosing() && !isRedisError(err, "NOGROUP") {
				t.logger.Error("Cannot claim idle entries", err, nil)
				t.rereadPending.Store(true)
			}
			return
		}
		if len(entries) > 0 {
			t.s.stats.claimed.Add(uint64(len(entries)))
			t.logger.Info("Claimed entries idle with other consumers", watermill.LogFields{"entries": len(entries)})
			t.accept(entries, true)
		}
		if next == "0-0" || next == "" {
			return
		}
		cursor = next
	}
}

// renew resets the idle time of every entry this subscriber holds, so that
// no other consumer claims them while they wait or a handler runs long.
func (t *streamsTopic) renew() {
	ids := t.heldIDs()
	for chunk := range slices.Chunk(ids, 512) {
		args := make([]any, 0, 2+2*len(chunk))
		args = append(args, t.s.config.ConsumerGroup, t.s.config.Consumer)
		for _, id := range chunk {
			args = append(args, id, "-")
		}
		lost, err := touchScript.Run(context.Background(), t.s.config.Client, []string{t.name}, args...).StringSlice()
		if err != nil {
			if !t.isClosing() {
				t.logger.Error("Cannot renew held entries", err, nil)
			}
			return
		}
		t.lost(lost)
	}
}

// lost forgets entries that are no longer this consumer's. Those still
// waiting here would be processed twice; those already handed out are.
func (t *streamsTopic) lost(ids []string) {
	if len(ids) == 0 {
		return
	}
	t.heldMu.Lock()
	n := 0
	for _, id := range ids {
		if _, ok := t.held[id]; ok {
			delete(t.held, id)
			n++
		}
	}
	t.heldMu.Unlock()
	if n > 0 {
		t.s.stats.lost.Add(uint64(n))
		t.logger.Error("Held entries were claimed by another consumer; they may be processed twice", nil,
			watermill.LogFields{"entries": n})
	}
}

func (t *streamsTopic) removeIdleConsumers() {
	idleMs := strconv.FormatInt(t.s.config.ConsumerIdleTimeout.Milliseconds(), 10)
	removed, err := deleteIdleConsumersScript.Run(context.Background(), t.s.config.Client, []string{t.name},
		t.s.config.ConsumerGroup, idleMs, t.s.config.Consumer).StringSlice()
	if err != nil {
		if !t.isClosing() && !isRedisError(err, "NOGROUP") {
			t.logger.Error("Cannot remove idle consumers", err, nil)
		}
		return
	}
	if len(removed) > 0 {
		t.logger.Info("Removed idle consumers with nothing pending", watermill.LogFields{"consumers": removed})
	}
}

// inboxOwner

func (t *streamsTopic) prepare(e *inboxEntry, msg *message.Message) {
	msg.Metadata.Set(MetadataStreamID, e.id)
	msg.Metadata.Set(MetadataDeliveryCount, strconv.Itoa(e.deliveries))
}

func (t *streamsTopic) delivered(*inboxEntry) { t.s.stats.delivered.Add(1) }

func (t *streamsTopic) acked(e *inboxEntry) {
	t.s.stats.acked.Add(1)
	t.unhold(e.id)
	if t.grouped() {
		t.s.acker.ack(t, e.id)
	}
}

// nacked schedules the next delivery with exponential backoff, recording
// the count in the group so it survives a crash, or dead-letters the entry
// once it has had MaxDeliveries.
func (t *streamsTopic) nacked(e *inboxEntry) (time.Duration, bool) {
	t.s.stats.nacked.Add(1)
	cfg := t.s.config
	if cfg.MaxDeliveries > 0 && e.deliveries >= cfg.MaxDeliveries {
		fields, err := cfg.Marshaler.Marshal(t.name, e.msg)
		if err != nil {
			t.logger.Error("Cannot encode a failed message for the dead-letter stream; it stays pending", err, nil)
			return cfg.NackMaxDelay, true
		}
		t.deadLetter(e.id, fields, e.deliveries,
			fmt.Sprintf("nacked %d times (MaxDeliveries %d)", e.deliveries, cfg.MaxDeliveries))
		return 0, false
	}
	e.deliveries++
	if t.grouped() {
		t.s.acker.recordDeliveries(t, e.id, e.deliveries)
	}
	return nackDelay(cfg.NackResendDelay, cfg.NackMaxDelay, e.deliveries-1), true
}

// nackDelay is base doubled for every Nack after the first, up to maxDelay.
func nackDelay(base, maxDelay time.Duration, nacks int) time.Duration {
	if base <= 0 {
		return 0
	}
	delay := base
	for i := 1; i < nacks && delay < maxDelay; i++ {
		delay *= 2
	}
	return min(delay, maxDelay)
}

// overflowed is never called: the readers bound themselves by the room
// left, and the inbox keeps what a race between them adds beyond it.
func (t *streamsTopic) overflowed(*inboxEntry) {}

func (t *streamsTopic) consumersChanged(n int) {
	if t.consumers.Swap(int32(n)) == 0 && n > 0 {
		signal(t.attached)
	}
}
