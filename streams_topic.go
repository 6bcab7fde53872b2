package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// streamsTopic is one stream a StreamsSubscriber consumes: a reader that
// fills the inbox, a maintenance loop that renews what the topic holds and
// tidies the group, and the inbox that hands messages to Subscribe calls.
// It implements inboxOwner.
//
// In a consumer group, entries come from three sources, in this order of
// priority: the consumer's own pending list (left by an earlier run, or
// handed back, or whose read reply was lost), entries other consumers left
// idle for ClaimMinIdle (claims), and new entries. New entries are read
// ahead as far as the inbox wants (see topicInbox.want); the first two are
// taken only as far as free handlers start them at once, because taking
// one counts a delivery (see lua/take.lua).
type streamsTopic struct {
	s      *StreamsSubscriber
	name   string
	logger watermill.LoggerAdapter
	inbox  *topicInbox

	ready   chan struct{} // closed when init is done; initErr says how
	initErr error
	started bool // its goroutines run; guarded by s.mu

	// identity is the consumer name the topic reads under and its lease;
	// nil while the name is lost to another subscriber (grouped only).
	identity atomic.Pointer[consumerIdentity]
	held     heldEntries

	consumers atomic.Int32
	// acksUnsent counts acks handed to the acker and not yet in Redis.
	acksUnsent atomic.Int64
	// resume asks the reader to go through its own pending list again:
	// entries were handed back, or a read's reply was lost.
	resume atomic.Bool
	// handingBack counts entries surrendered whose release has not reached
	// Redis yet, and surrenders counts surrenders; handedBack (capacity 1)
	// is signalled when handingBack drops to zero. See awaitHandBacks.
	handingBack   atomic.Int64
	surrenders    atomic.Uint64
	handedBack    chan struct{}
	renewNow      chan struct{} // capacity 1: the dispatcher waits for a renewal
	renewErrorLog logThrottle   // failed renewals
	readErrorLog  logThrottle   // failed reads
	moveErrorLog  logThrottle   // failed moves of delayed messages

	// Reader only.
	handBackLate  bool     // hand-backs outlasted handBackWait: read on meanwhile
	resuming      bool     // reading the own pending list
	pendingPage   []string // own pending IDs listed, not yet taken
	pendingCursor string   // where the next page of the own pending list starts
	lastPage      bool     // pendingPage is the end of the list
	claimCursor   string
	claiming      bool      // claims found entries: take them before new ones
	nextClaim     time.Time // when to look for idle entries again
	lastID        string    // a fan-out subscription's position
	readConn      readerConn

	// readerDone is closed when the reader has returned.
	readerDone chan struct{}

	// inFlightAtClose are the deliveries handlers had when the inbox
	// closed; set by the dispatcher as it exits, read by Close after.
	inFlightAtClose []*delivery
}

func newStreamsTopic(s *StreamsSubscriber, name string) *streamsTopic {
	t := &streamsTopic{
		s:           s,
		name:        name,
		logger:      s.logger.With(watermill.LogFields{"topic": name}),
		ready:       make(chan struct{}),
		renewNow:    make(chan struct{}, 1),
		handedBack:  make(chan struct{}, 1),
		readerDone:  make(chan struct{}),
		held:        heldEntries{entries: map[string]*inboxEntry{}},
		claimCursor: "0-0",
	}
	t.inbox = newTopicInbox(t, inboxConfig{
		limit:       s.config.Prefetch,
		overflow:    overflowKeep,
		maxInFlight: s.config.MaxInFlight,
		pull:        true,
		surrender:   t.grouped(),
		readAhead:   s.config.ReadAhead,
		roundTrip:   s.roundTrip,
		fixedAhead:  !t.grouped(),
		orphanGrace: max(s.config.CloseTimeout, 0),
		// Others take what is handed back at their next claim: hand back
		// only for a wait longer than that.
		handBackAfter: max(s.config.ClaimInterval, time.Second),
	}, s.closing)
	return t
}

func (t *streamsTopic) grouped() bool { return t.s.config.ConsumerGroup != "" }

// consumerName is the name the topic reads under now, for logs and dead
// letters.
func (t *streamsTopic) consumerName() string {
	if id := t.identity.Load(); id != nil {
		return id.name
	}
	return t.s.config.Consumer
}

// renewPeriod is how often the topic renews its entries and its consumer
// name: often enough that neither lapses while the subscriber runs.
func (t *streamsTopic) renewPeriod() time.Duration {
	return max(min(t.s.config.ClaimMinIdle, t.s.config.ConsumerLease)/3, time.Millisecond)
}

// freshFor is how long after Redis confirmed an entry as ours it may be
// handed out without asking again: another consumer may claim it only
// after ClaimMinIdle, and a renewal comes every renewPeriod.
func (t *streamsTopic) freshFor() time.Duration { return t.renewPeriod() * 3 / 2 }

// init creates the consumer group and leases the consumer name, or finds
// where fan-out starts.
func (t *streamsTopic) init(ctx context.Context) error {
	if t.grouped() {
		if err := t.ensureGroup(ctx, t.s.config.StartID); err != nil {
			return err
		}
		id, err := t.acquireName(ctx)
		if err != nil {
			return err
		}
		t.identity.Store(id)
		t.logger = t.logger.With(watermill.LogFields{"consumer": id.name})
		t.resume.Store(true)
		return nil
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

// ensureGroup creates the consumer group (and the stream) unless it
// exists. It looks first, without writing: a Redis that is full refuses
// XGROUP CREATE before it would say BUSYGROUP, and a consumer of an
// existing group must start then, as reading and acking still work.
func (t *streamsTopic) ensureGroup(ctx context.Context, start string) error {
	groups, err := t.s.config.Client.XInfoGroups(ctx, t.name).Result()
	if err == nil {
		for _, g := range groups {
			if g.Name == t.s.config.ConsumerGroup {
				return nil
			}
		}
	}
	err = t.s.config.Client.XGroupCreateMkStream(ctx, t.name, t.s.config.ConsumerGroup, start).Err()
	if err != nil && !isRedisError(err, "BUSYGROUP") {
		return err
	}
	return nil
}

// start launches the topic's goroutines. The caller holds s.mu.
func (t *streamsTopic) start() {
	t.started = true
	t.s.wg.Go(t.inbox.run)
	t.s.wg.Go(t.read)
	if t.grouped() {
		t.s.wg.Go(t.maintain)
		// Fan-out subscribers only read: delayed messages are moved by
		// the subscribers of consumer groups, which write anyway.
		t.s.wg.Go(t.moveDelayed)
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

// errNameLost stops reading while another subscriber holds the consumer
// name; see nameLost.
var errNameLost = errors.New("redisbus: the consumer name is held by another subscriber")

// read fills the inbox until Close.
func (t *streamsTopic) read() {
	defer close(t.readerDone)
	defer t.readConn.close()
	backoff := minReconnectBackoff
	for {
		// Surrenders from here on hand back what the read brings too.
		surrenders := t.surrenders.Load()
		n := t.inbox.waitWant(t.takesOnly, t.closing())
		if n == 0 {
			return
		}
		if again, closing := t.handBacksFirst(); closing {
			return
		} else if again {
			continue
		}
		var err error
		switch {
		case !t.grouped():
			err = t.readFanOut(n)
		case t.identity.Load() == nil:
			err = errNameLost
		case t.resuming:
			err = t.resumeOwn(n)
		case t.claiming:
			err = t.claim(n)
		case !time.Now().Before(t.nextClaim):
			// Claims are due: from now on take only what free handlers
			// start, until claims come up empty.
			t.claiming = true
			continue
		default:
			err = t.readNew(n, surrenders)
		}
		if t.isClosing() {
			return
		}
		if err != nil {
			slotmap.Refresh(err, t.s.reader(), t.s.config.Client)
			if !errors.Is(err, errNameLost) {
				t.readFailed(err)
			}
			if !sleep(backoff, t.closing()) {
				return
			}
			backoff = min(2*backoff, maxReconnectBackoff)
			// Whatever the failed command delivered is pending with us now.
			t.resume.Store(t.grouped())
			continue
		}
		backoff = minReconnectBackoff
	}
}

// handBackWait bounds how long the reader waits for hand-backs to reach
// Redis (see awaitHandBacks) before it reads on all the same, until they
// do: a Redis that keeps refusing them must not stop the topic.
const handBackWait = time.Second

// handBacksFirst keeps the reader from reading past entries the inbox
// handed back: it waits for them to reach Redis (see awaitHandBacks), and
// reports whether the reader must look again before it reads, as their
// resume pass comes first, and whether the subscriber is closing.
func (t *streamsTopic) handBacksFirst() (again, closing bool) {
	switch {
	case t.handingBack.Load() == 0:
		t.handBackLate = false
	case !t.handBackLate:
		released, closing := t.awaitHandBacks()
		if released || closing {
			return true, closing
		}
		// Still on their way: read on, for once order yields to progress.
		t.handBackLate = true
	}
	// A hand-back may have reached Redis since takesOnly looked.
	return t.resume.Load(), false
}

// awaitHandBacks waits, up to handBackWait, until the entries the inbox
// handed back are released in Redis; it reports whether they are, and
// whether the subscriber is closing. Whatever the reader took meanwhile
// would be delivered before them: a sole consumer must keep the stream's
// order, and its resume pass, which the release asks for, takes them back
// first. Resuming before the release would not do: the entries are still
// held, and skipped.
func (t *streamsTopic) awaitHandBacks() (released, closing bool) {
	timer := time.NewTimer(handBackWait)
	defer timer.Stop()
	select {
	case <-t.handedBack:
		return true, false
	case <-timer.C:
		return false, false
	case <-t.closing():
		return false, true
	}
}

// handBacksDone notes that n surrendered entries are released in Redis, or
// will never be.
func (t *streamsTopic) handBacksDone(n int) {
	if n > 0 && t.handingBack.Add(-int64(n)) <= 0 {
		signal(t.handedBack)
	}
}

// takesOnly reports whether the reader takes only what free handlers start
// at once (own pending list, claims). It runs on the reader goroutine,
// which is also where resume requests are picked up.
func (t *streamsTopic) takesOnly() bool {
	if t.resume.Swap(false) {
		t.resuming, t.pendingPage, t.pendingCursor, t.lastPage = true, nil, "", false
	}
	return t.resuming || t.claiming
}

// readNew reads entries no consumer of the group has had (XREADGROUP >).
// When the inbox handed entries back since surrenders was loaded, what the
// read brings is handed back too: it would go ahead of them otherwise.
func (t *streamsTopic) readNew(n int, surrenders uint64) error {
	id := t.identity.Load()
	// Wake up for the next claim check even when nothing new arrives.
	block := max(min(t.s.config.BlockTime, time.Until(t.nextClaim)), time.Millisecond)
	start := time.Now()
	var streams []redis.XStream
	err := t.onReader(func(c readerCmdable) (err error) {
		streams, err = c.XReadGroup(context.Background(), &redis.XReadGroupArgs{
			Group:    t.s.config.ConsumerGroup,
			Consumer: id.name,
			Streams:  []string{t.name, ">"},
			Count:    int64(n),
			Block:    block,
		}).Result()
		return err
	})
	entries, err := firstStream(streams, err)
	if err != nil {
		return err
	}
	t.s.stats.read.Add(uint64(len(entries)))
	freshUntil := start.Add(t.freshFor()).UnixNano()
	handBack := t.surrenders.Load() != surrenders
	var back []*inboxEntry
	for _, xm := range entries {
		// Reading counted a delivery that has not happened yet.
		e := &inboxEntry{id: xm.ID, values: xm.Values, deliveries: 1, exact: true, reserved: true}
		e.freshUntil.Store(freshUntil)
		switch {
		case !handBack:
			t.accept(e)
		case t.held.tryHold(e):
			back = append(back, e)
		}
	}
	if len(back) > 0 {
		t.surrender(back, false)
	}
	return nil
}

// onReader runs one of the commands of a consumer group's reader: on its
// connection (see readerConn) when the subscriber made the client for
// them, else on ReadClient.
func (t *streamsTopic) onReader(command func(readerCmdable) error) error {
	if !t.s.ownBlocking {
		return command(t.s.reader())
	}
	return t.readConn.run(context.Background(), t.s.reader(), t.s.config.Client, t.name, command)
}

func (t *streamsTopic) readFanOut(n int) error {
	streams, err := t.s.reader().XRead(context.Background(), &redis.XReadArgs{
		Streams: []string{t.name, t.lastID},
		Count:   int64(n),
		Block:   t.s.config.BlockTime,
	}).Result()
	entries, err := firstStream(streams, err)
	if err != nil {
		return err
	}
	t.s.stats.read.Add(uint64(len(entries)))
	for _, xm := range entries {
		t.lastID = xm.ID
		t.accept(&inboxEntry{id: xm.ID, values: xm.Values, deliveries: 1, exact: true})
	}
	return nil
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

// resumeOwn takes entries from this consumer's own pending list: up to n,
// from a page listed ahead (XPENDING), skipping those held already.
func (t *streamsTopic) resumeOwn(n int) error {
	if len(t.pendingPage) == 0 {
		if t.lastPage {
			t.resuming = false
			return nil
		}
		if err := t.listOwnPending(max(n, 256)); err != nil {
			return err
		}
		if len(t.pendingPage) == 0 {
			return nil // all held here already; lastPage ends the pass next time
		}
	}
	take := t.pendingPage[:min(n, len(t.pendingPage))]
	_, done, err := t.take(take)
	t.pendingPage = t.pendingPage[done:]
	return err
}

func (t *streamsTopic) listOwnPending(count int) error {
	start := "-"
	if t.pendingCursor != "" {
		start = "(" + t.pendingCursor
	}
	pending, err := t.s.config.Client.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: t.name, Group: t.s.config.ConsumerGroup, Consumer: t.identity.Load().name,
		Start: start, End: "+", Count: int64(count),
	}).Result()
	if err != nil {
		return err
	}
	t.lastPage = len(pending) < count
	for _, p := range pending {
		t.pendingCursor = p.ID
		if !t.held.has(p.ID) {
			t.pendingPage = append(t.pendingPage, p.ID)
		}
	}
	return nil
}

// claim takes over up to n entries that have been pending with other
// consumers for ClaimMinIdle (XAUTOCLAIM … JUSTID, which does not count a
// delivery; take does, for the ones it hands out). While claims find
// entries, the reader takes them before new ones.
func (t *streamsTopic) claim(n int) error {
	id := t.identity.Load()
	var reply []any
	err := t.onReader(func(c readerCmdable) (err error) {
		reply, err = c.Do(context.Background(), "XAUTOCLAIM", t.name, t.s.config.ConsumerGroup, id.name,
			t.s.config.ClaimMinIdle.Milliseconds(), t.claimCursor, "COUNT", n, "JUSTID").Slice()
		return err
	})
	if err != nil {
		t.claiming = false
		t.nextClaim = time.Now().Add(t.s.config.ClaimInterval)
		return err
	}
	next, ids, deleted := parseAutoClaim(reply)
	if len(deleted) > 0 {
		t.trimmed(len(deleted))
	}
	t.claimCursor = next
	t.claiming = len(ids) > 0 || next != "0-0"
	if next == "0-0" && len(ids) == 0 {
		t.nextClaim = time.Now().Add(t.s.config.ClaimInterval)
	}
	var toTake []string
	for _, claimed := range ids {
		if !t.held.has(claimed) {
			toTake = append(toTake, claimed)
		}
	}
	if len(toTake) == 0 {
		return nil
	}
	// Every one of them is ours now, taken below or, when the inbox wants
	// fewer, resumed from the own pending list later: each counts as
	// claimed once, here.
	t.s.stats.claimed.Add(uint64(len(toTake)))
	t.logger.Info("Claimed entries idle with other consumers", watermill.LogFields{"entries": len(toTake)})
	_, done, err := t.take(toTake)
	if done < len(toTake) {
		t.resume.Store(true) // claimed, not yet taken: ours, in the own pending list
	}
	return err
}

func parseAutoClaim(reply []any) (next string, ids, deleted []string) {
	if len(reply) < 2 {
		return "0-0", nil, nil
	}
	next, _ = reply[0].(string)
	for _, v := range asSlice(reply[1]) {
		if s, ok := v.(string); ok {
			ids = append(ids, s)
		}
	}
	if len(reply) > 2 {
		for _, v := range asSlice(reply[2]) {
			if s, ok := v.(string); ok {
				deleted = append(deleted, s)
			}
		}
	}
	return next, ids, deleted
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// take readies entries pending with this consumer for delivery (see
// lua/take.lua) and queues them; it returns how many it queued, and how
// many of ids it got to (it stops at an entry that must run alone).
func (t *streamsTopic) take(ids []string) (queued, done int, err error) {
	id := t.identity.Load()
	args := t.scriptArgs(id, 1+len(ids), max(t.s.config.MaxDeliveries, 0))
	for _, entryID := range ids {
		args = append(args, entryID)
	}
	start := time.Now()
	var reply []any
	err = t.onReader(func(c readerCmdable) (err error) {
		reply, err = takeScript.Run(context.Background(), c, []string{t.name, id.key}, args...).Slice()
		return err
	})
	t.s.observeRoundTrip(time.Since(start), err)
	if err != nil {
		if holder, lost := leaseLost(err); lost {
			t.nameLost(id, holder)
			return 0, 0, errNameLost
		}
		return 0, 0, err
	}
	freshUntil := start.Add(t.freshFor()).UnixNano()
	gone := 0
	done = len(reply)
	for _, item := range reply {
		fields := asSlice(item)
		if len(fields) < 2 {
			continue
		}
		entryID, _ := fields[0].(string)
		status, _ := fields[1].(string)
		switch status {
		case "gone":
			gone++
			continue
		case "other":
			continue
		}
		count, _ := fields[2].(int64)
		e := &inboxEntry{id: entryID, values: valuesOf(asSlice(fields[3])), deliveries: int(count)}
		e.freshUntil.Store(freshUntil)
		t.s.stats.read.Add(1)
		if status == "exhausted" {
			if t.held.tryHold(e) {
				t.deadLetter(e, fmt.Sprintf("delivered %d times without an ack, MaxDeliveries is %d", count-1, t.s.config.MaxDeliveries))
			}
			continue
		}
		// count includes the delivery about to happen; the one before may
		// never have reached a handler (the reader crashed first).
		e.reserved = true
		// An earlier delivery may have reached a handler and not been
		// acked: if it crashed its process, it must not take the other
		// messages in flight down with it again (see lua/take.lua).
		e.isolate = count-1 >= 1
		if t.accept(e) {
			queued++
		}
	}
	if gone > 0 {
		t.trimmed(gone)
	}
	return queued, done, nil
}

// scriptArgs starts the arguments of a consumer's script (see
// lua/lease.lua): the group, the consumer, its lease token and time to
// live, then extra; room is how many more will follow.
func (t *streamsTopic) scriptArgs(id *consumerIdentity, room int, extra ...any) []any {
	args := make([]any, 0, 4+len(extra)+room)
	args = append(args, t.s.config.ConsumerGroup, id.name, id.token, t.s.config.ConsumerLease.Milliseconds())
	return append(args, extra...)
}

// valuesOf turns a flat field list from a script into entry values, as
// go-redis returns them from XRANGE.
func valuesOf(flat []any) map[string]any {
	values := make(map[string]any, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		values[k] = flat[i+1]
	}
	return values
}

// accept holds and queues an entry read from Redis; it reports false when
// the entry was held already (read twice) or cannot be delivered.
func (t *streamsTopic) accept(e *inboxEntry) bool {
	if !t.held.tryHold(e) {
		return false
	}
	if t.forAnotherGroup(e) {
		t.skip(e)
		return false
	}
	msg, err := t.decode(e.values)
	if err != nil {
		// No handler will ever see it.
		e.deliveries = 0
		t.deadLetter(e, "cannot decode entry: "+err.Error())
		return false
	}
	e.uuid = msg.UUID
	t.prepare(e, msg)
	e.first = msg
	t.inbox.push(e)
	return true
}

func (t *streamsTopic) decode(values map[string]any) (*message.Message, error) {
	msg, err := t.s.config.Marshaler.Unmarshal(t.name, values)
	if err == nil && msg == nil {
		err = errNoMessage
	}
	return msg, err
}

// readFailed logs a read error and repairs what it can: a group or stream
// deleted under a running subscriber is recreated.
func (t *streamsTopic) readFailed(err error) {
	switch {
	case redirected(err) || isRedisError(err, "UNBLOCKED"):
		// Resharding: the stream's slot moved to another node (a read
		// blocked on the old one is ended with UNBLOCKED). The next read
		// goes where the slot map, read anew, points.
		t.logger.Info("The stream's slot moved to another node; reading there", watermill.LogFields{"err": err.Error()})
		return
	case !isRedisError(err, "NOGROUP"):
		// Every reader of the topic retries at once with backoff: one
		// line in a while says as much as hundreds.
		if t.readErrorLog.allow() {
			t.logger.Error("Cannot read stream, retrying", err, nil)
		}
		return
	}
	// The new group starts at the beginning of the stream. If only the group
	// was deleted, its entries are delivered again; if the stream was
	// deleted too, a new one may reuse the IDs of the old (they are
	// time-based), so starting after the last entry read could skip new
	// entries. At-least-once prefers the duplicates.
	t.logger.Error("Consumer group or stream disappeared; recreating the group at the start of the stream", err, nil)
	if err := t.ensureGroup(context.Background(), "0"); err != nil {
		t.logger.Error("Cannot recreate consumer group", err, nil)
	}
}

// trimmed reports pending entries whose stream entry is gone.
func (t *streamsTopic) trimmed(n int) {
	t.s.stats.trimmed.Add(uint64(n))
	t.logger.Error("Pending entries were trimmed or deleted from the stream before they were handled; they are lost", errEntriesGone,
		watermill.LogFields{"entries": n})
}

// deadLetter moves a held entry to the dead-letter stream: the acker
// stores a copy of the entry as it was read, then acks it in the group.
func (t *streamsTopic) deadLetter(e *inboxEntry, reason string) {
	t.logger.Error("Moving entry to the dead-letter stream", errors.New(reason), watermill.LogFields{
		"entry_id": e.id, "dead_letter_stream": t.s.config.DeadLetterTopic(t.name),
	})
	t.s.acker.deadLetter(t, e, reason)
}

// maintain renews what the topic holds and removes idle consumers, until
// Close.
func (t *streamsTopic) maintain() {
	renew := time.NewTicker(t.renewPeriod())
	defer renew.Stop()
	var tidy <-chan time.Time
	if timeout := t.s.config.ConsumerIdleTimeout; timeout > 0 {
		ticker := time.NewTicker(min(timeout/2, 10*time.Minute))
		defer ticker.Stop()
		tidy = ticker.C
	}
	// Renewals the dispatcher asks for come at most every renewRetry, so
	// that a Redis that fails them is not asked on every event; well within
	// freshFor, so that what one confirms is still fresh when handed out.
	renewRetry := min(50*time.Millisecond, t.renewPeriod()/2)
	var lastRenew time.Time
	for {
		select {
		case <-renew.C:
			t.renew()
			lastRenew = time.Now()
		case <-t.renewNow:
			if wait := renewRetry - time.Since(lastRenew); wait > 0 && !sleep(wait, t.closing()) {
				return
			}
			t.renew()
			lastRenew = time.Now()
		case <-tidy:
			t.removeIdleConsumers()
		case <-t.closing():
			return
		}
	}
}

func (t *streamsTopic) removeIdleConsumers() {
	id := t.identity.Load()
	if id == nil {
		return
	}
	idleMs := strconv.FormatInt(t.s.config.ConsumerIdleTimeout.Milliseconds(), 10)
	removed, err := deleteIdleConsumersScript.Run(context.Background(), t.s.config.Client, []string{t.name},
		t.s.config.ConsumerGroup, idleMs, id.name).StringSlice()
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

func (t *streamsTopic) message(e *inboxEntry) *message.Message {
	msg, err := t.decode(e.values)
	if err != nil {
		// It decoded when it was read: a Marshaler that changed its mind.
		t.deadLetter(e, "cannot decode entry: "+err.Error())
		return nil
	}
	msg.UUID = e.uuid // a fresh UUID for entries without one must stay the same
	t.prepare(e, msg)
	return msg
}

// forAnotherGroup reports whether e is a copy a handler of another
// consumer group asked to get again later (a Nack with a delay): this
// group, and fan-out, had the message already.
func (t *streamsTopic) forAnotherGroup(e *inboxEntry) bool {
	group, copied := e.values[fieldForGroup].(string)
	return copied && group != t.s.config.ConsumerGroup
}

// skip settles an entry that is not for this subscriber, without a
// delivery: acked in a group, passed in fan-out.
func (t *streamsTopic) skip(e *inboxEntry) {
	if !t.grouped() {
		t.held.release(e.id)
		return
	}
	e.acked.Store(true)
	t.s.acker.ack(t, e)
}

func (t *streamsTopic) prepare(e *inboxEntry, msg *message.Message) {
	e.prior = priorDeliveries(e.values)
	for _, f := range copyFields {
		if _, ok := e.values[f]; ok { // a Marshaler made it metadata
			delete(msg.Metadata, f)
		}
	}
	e.arrivedDelay = delayOf(msg)
	msg.Metadata.Set(MetadataStreamID, e.id)
	msg.Metadata.Set(MetadataDeliveryCount, strconv.Itoa(e.prior+e.deliveries))
}

func (t *streamsTopic) delivered(*inboxEntry) { t.s.stats.delivered.Add(1) }

func (t *streamsTopic) acked(e *inboxEntry) {
	t.s.stats.acked.Add(1)
	if !t.grouped() {
		t.held.release(e.id)
		return
	}
	// Held until the XACK is sent: the own pending list still has it.
	e.acked.Store(true)
	t.s.acker.ack(t, e)
}

// nacked schedules the next delivery with exponential backoff, recording
// the count in the group so it survives a crash, or dead-letters the entry
// once its handlers failed on it MaxDeliveries times.
//
// A handler that set a delay on the message before it nacked it (directly,
// or through middleware.DelayOnError) asks for it to come back then: in a
// group, a copy is stored as a delayed message and the entry is acked, so
// that it holds neither a handler nor a pending entry meanwhile; in
// fan-out, it waits here.
func (t *streamsTopic) nacked(e *inboxEntry, msg *message.Message) (time.Duration, bool) {
	t.s.stats.nacked.Add(1)
	cfg := t.s.config
	failures := e.prior + e.deliveries
	if !e.exact {
		failures-- // the count may include a delivery that never happened
	}
	if cfg.MaxDeliveries > 0 && failures >= cfg.MaxDeliveries {
		times := "times"
		if failures == 1 {
			times = "time"
		}
		t.deadLetter(e, fmt.Sprintf("nacked %d %s (MaxDeliveries %d)", failures, times, cfg.MaxDeliveries))
		return 0, false
	}
	if due, later := laterDelivery(msg, e.arrivedDelay); later {
		if !t.grouped() {
			return time.Until(due), true
		}
		fields, err := t.rescheduleFields(msg, failures)
		if err == nil {
			t.s.stats.rescheduled.Add(1)
			t.s.acker.reschedule(t, e, scheduled{due: due, fields: fields})
			return 0, false
		}
		t.logger.Error("Cannot reschedule a nacked message; it comes back with the usual backoff", err,
			watermill.LogFields{"message_uuid": msg.UUID})
	}
	e.deliveries++
	e.reserved = true
	if t.grouped() {
		t.s.acker.recordDeliveries(t, e)
	}
	return nackDelay(cfg.NackResendDelay, cfg.NackMaxDelay, e.deliveries-1), true
}

// rescheduleFields encodes the copy of a nacked message that comes back
// later: its metadata as the handler left it, without what each delivery
// sets; and beside it, the deliveries so far and, since the copy enters
// the stream every group reads, the group whose subscribers deliver it.
func (t *streamsTopic) rescheduleFields(msg *message.Message, deliveries int) ([]any, error) {
	c := msg.Copy()
	delete(c.Metadata, MetadataStreamID)
	delete(c.Metadata, MetadataDeliveryCount)
	fields, err := t.s.config.Marshaler.Marshal(t.name, c)
	if err != nil {
		return nil, err
	}
	return append(fields, fieldPriorDeliveries, strconv.Itoa(deliveries), fieldForGroup, t.s.config.ConsumerGroup), nil
}

// copyFields are the entry fields of a rescheduled copy, beside the
// Marshaler's.
var copyFields = []string{fieldPriorDeliveries, fieldForGroup}

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

// overflowed is never called: the reader reads only what the inbox wants,
// and the inbox keeps what a race adds beyond it.
func (t *streamsTopic) overflowed(*inboxEntry) {}

func (t *streamsTopic) stale(*inboxEntry) { signal(t.renewNow) }

// mayHandOut holds back an entry taken from a pending list (after a crash, or
// from a consumer that died) until every ack sent before is in Redis: if
// it crashes its process as well, the messages handled before it must not
// come back counted as failures with it.
func (t *streamsTopic) mayHandOut(e *inboxEntry) bool {
	if e.exact || t.acksUnsent.Load() == 0 {
		return true
	}
	t.s.acker.flushSoon()
	return false
}

func (t *streamsTopic) consumersChanged(n int) {
	if t.consumers.Swap(int32(n)) == 0 && n > 0 && t.grouped() {
		t.resume.Store(true) // entries handed back meanwhile are ours again
	}
}

// surrender hands entries nobody here will handle soon back to the group.
func (t *streamsTopic) surrender(entries []*inboxEntry, idle bool) {
	t.handingBack.Add(int64(len(entries)))
	t.surrenders.Add(1)
	t.s.acker.release(t, entries, idle)
}

// takenBack counts the delivery a handler had when its Subscribe ended and
// that it never settled: the next one may not be the first.
func (t *streamsTopic) takenBack(e *inboxEntry) {
	e.deliveries++
	e.reserved = true
	if t.grouped() {
		t.s.acker.recordDeliveries(t, e)
	}
}

// closedWithInFlight keeps the deliveries handlers still had at Close, for
// Close to wait for their acks (see awaitInFlight).
func (t *streamsTopic) closedWithInFlight(deliveries []*delivery) {
	t.inFlightAtClose = deliveries
}

// awaitInFlight waits until the deliveries handlers had at Close are acked
// or nacked, or until deadline. A Router closes its subscribers while its
// handlers still run: their acks count. What is not acked is handed back
// with the rest when the subscriber closes.
func (t *streamsTopic) awaitInFlight(deadline <-chan time.Time) (expired bool) {
	for _, d := range t.inFlightAtClose {
		select {
		case <-d.msg.Acked():
			t.acked(d.entry)
			continue
		case <-d.msg.Nacked():
			continue
		default:
		}
		if expired {
			continue
		}
		select {
		case <-d.msg.Acked():
			t.acked(d.entry)
		case <-d.msg.Nacked():
		case <-deadline:
			expired = true
		}
	}
	return expired
}
