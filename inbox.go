package redisbus

import (
	"context"
	"math"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// OverflowPolicy says what a topic's inbox does with a message that arrives
// when it is full. Every dropped message is counted in
// SubscriberStats.Dropped and logged.
type OverflowPolicy int

const (
	// DropOldest discards the message that has waited longest, so the
	// inbox keeps the most recent ones. This is the default: for cache
	// invalidation and live updates the newest message matters most.
	DropOldest OverflowPolicy = iota
	// DropNewest discards the message that just arrived, so the inbox keeps
	// the oldest ones.
	DropNewest
)

// overflowKeep never drops: for readers that bound themselves by what the
// inbox wants (see want), where a race may only exceed the limit by a batch.
const overflowKeep OverflowPolicy = -1

func (p OverflowPolicy) String() string {
	switch p {
	case DropOldest:
		return "DropOldest"
	case DropNewest:
		return "DropNewest"
	}
	return "OverflowPolicy(?)"
}

// inboxEntry is one message in a topic's inbox.
//
// The inbox never hands out the same *message.Message twice: a handler may
// change the message it got and then nack it, and the next delivery must
// carry what was read. The owner makes a fresh message for every delivery
// (inboxOwner.message).
// size is what e weighs against an inbox's byte limit.
func (e *inboxEntry) size() int { return e.weight }

type inboxEntry struct {
	// first is the message decoded when the entry was read, for its first
	// offer; nil once used, after which the owner decodes afresh.
	first *message.Message
	// raw is what a Pub/Sub entry was read as.
	raw string
	// weight is the memory the entry holds while it waits, weighed against
	// inboxConfig.bytes; set before it is queued, never changed after.
	weight int
	// uuid is the UUID of the first decoding. Decoding again must not
	// change it, and a payload without one gets a random one.
	uuid string

	// Streams only.
	id     string
	values map[string]any // the entry's fields as read: fresh copies and dead letters come from them
	// deliveries is how often the entry may have been handed to a handler,
	// counting the delivery it is held for; see streamsTopic for how it
	// is kept in Redis.
	deliveries int
	// exact says deliveries is exact, not one more than may have happened
	// (a previous holder might have crashed before handing it out).
	exact bool
	// reserved says deliveries already counts a delivery that has not
	// happened yet; handing the entry back without delivering it takes
	// that count back.
	reserved bool
	// prior is how many deliveries reached a handler before the entry was
	// rescheduled by a Nack with a delay (a copy's fields say so).
	prior int
	// arrivedDelay is the delay metadata the message was delivered with
	// (delayOf): a Nack that leaves it is no Nack with a new delay.
	arrivedDelay string
	// isolate asks for the entry to be handled alone: an earlier delivery
	// failed or died with its process, and it must not take other messages
	// down with it again.
	isolate bool
	// freshUntil is when Redis' last word that the entry is still ours may
	// have lapsed (Unix nanoseconds); 0 means never.
	freshUntil atomic.Int64
	// lost is set when the entry turned out to be someone else's.
	lost atomic.Bool
	// acked is set once a handler acked it: it stays held until Redis has
	// the ack, so that nothing reads it as pending meanwhile.
	acked atomic.Bool

	notBefore time.Time // a nacked message waits until then
}

func (e *inboxEntry) isFresh(now time.Time) bool {
	until := e.freshUntil.Load()
	return until == 0 || now.UnixNano() < until
}

// inboxOwner is what a topicInbox reports to and asks: the Pub/Sub
// Subscriber, or one topic of a Streams subscriber. Its methods run on the
// dispatcher goroutine and must not block.
type inboxOwner interface {
	// message returns a new message for one delivery of e, with the
	// per-delivery metadata set; nil means e cannot be delivered and is
	// gone (the owner took care of it).
	message(e *inboxEntry) *message.Message
	delivered(e *inboxEntry)
	acked(e *inboxEntry)
	// nacked decides when e is offered again; redeliver false means the
	// owner took it (e.g. to a dead-letter stream, or to deliver later).
	// msg is the message the handler nacked, with the metadata it set.
	nacked(e *inboxEntry, msg *message.Message) (delay time.Duration, redeliver bool)
	// overflowed reports an entry the overflow policy dropped.
	overflowed(e *inboxEntry)
	// stale reports that e waits for Redis to confirm it is still ours.
	stale(e *inboxEntry)
	// mayHandOut reports whether e may be handed out now; when not, the owner
	// pokes the inbox once it may.
	mayHandOut(e *inboxEntry) bool
	// consumersChanged reports how many Subscribe calls are attached.
	consumersChanged(n int)
	// surrender takes back entries that nobody here is going to handle
	// soon (inboxes configured to surrender). idle says why: no consumer
	// is attached (the last one left, or the inbox closed); otherwise the
	// entries are more than the consumers will start soon.
	surrender(entries []*inboxEntry, idle bool)
	// takenBack reports that a consumer's Subscribe ended with e unsettled:
	// e is handed to another consumer, or kept for the next.
	takenBack(e *inboxEntry)
	// closedWithInFlight hands over, when the inbox closes, the deliveries
	// that consumers still had (inboxes configured to surrender): their
	// handlers may still ack them.
	closedWithInFlight(deliveries []*delivery)
}

// inboxConfig sizes an inbox.
type inboxConfig struct {
	limit    int            // entries waiting in the queue, the head included
	bytes    int            // their sizes (inboxEntry.size), the head excluded; 0: no limit
	overflow OverflowPolicy // when push finds the queue full
	// maxInFlight is how many unacked messages a consumer may hold. With 1
	// (the ordered default) a consumer gets its next message only after
	// the previous one was acked or nacked.
	maxInFlight int

	// pull inboxes are filled by a reader that asks how much to read
	// (want).
	pull bool
	// surrender hands back to the owner what waits while no consumer is
	// attached, and everything held at shutdown (consumer groups, where
	// other processes can take it).
	surrender bool
	// readAhead is how much handler time of entries a pull inbox keeps
	// waiting beyond what its consumers can take at once; negative: none.
	readAhead time.Duration
	// roundTrip, when set, is how long a round trip to Redis takes now:
	// read-ahead also covers the time the next read takes to arrive, or
	// a distant Redis would leave the handlers idle for one per message.
	roundTrip func() time.Duration
	// fixedAhead reads ahead limit entries whatever the handlers take: for
	// fan-out, where no other process wants the entries.
	fixedAhead bool
	// orphanGrace is how long messages a consumer had when its Subscribe
	// ended may still be acked or nacked before they are taken back; 0
	// takes them back at once.
	orphanGrace time.Duration
	// handBackAfter, in an inbox that surrenders: when a nacked head holds
	// the queue for longer (ordered delivery), nothing more is read and
	// the entries behind it are handed back, for other processes to take.
	handBackAfter time.Duration
}

// topicInbox holds one topic's messages in this process until they are
// acked, and hands them to the topic's consumers (Subscribe calls).
//
// Readers push into a bounded queue and never block on consumers. One
// dispatcher goroutine per topic owns the consumers: it offers the head of
// the queue to every consumer with room at once, and whichever reads first
// takes it. A consumer holds at most maxInFlight unacked messages, which
// keeps order per consumer with the default of one, and lets a consumer that
// stopped reading never strand a message another could take. A nacked
// message goes back to the head of the queue (or, when order is given up,
// waits aside until its delay ends); one whose consumer went away is handed
// to the next.
//
// A pull inbox (Streams) also tells its reader how much to read: enough for
// every free consumer slot, plus what the handlers are expected to start
// within readAhead, judged by how long they have been taking. Entries
// therefore stay in Redis, where other processes of the group can take them,
// until this process is about to need them.
type topicInbox struct {
	owner  inboxOwner
	config inboxConfig

	mu    sync.Mutex
	queue deque
	// headHeld is set while the dispatcher holds an entry popped from the
	// queue to offer it (head). It counts against the limit but is never
	// dropped: it is being delivered.
	headHeld bool
	// What the dispatcher holds besides the queue, kept for want.
	delayedN, inflightN, slots, freeSlots, ahead int
	// headBlocked says a nacked head holds the queue for longer than
	// handBackAfter.
	headBlocked bool
	// isolatedHeld counts entries to be handled alone that the inbox holds,
	// waiting or in flight: while there are any, nothing else is taken.
	isolatedHeld atomic.Int32

	wake    chan struct{} // capacity 1: the queue got an entry
	space   chan struct{} // capacity 1: the reader should read
	refresh chan struct{} // capacity 1: entries were confirmed or lost

	attach  chan *consumer
	results chan ackResult // acks of consumers with maxInFlight > 1
	closing <-chan struct{}
	done    chan struct{} // closed when the dispatcher has exited

	// Owned by the dispatcher goroutine.
	consumers []*consumer
	head      *inboxEntry
	delayed   []*inboxEntry // nacked entries waiting aside (maxInFlight > 1)
	isolated  int           // deliveries in flight of entries handled alone
	// orphans are deliveries whose consumer left while its handler still
	// had them: an Ack or a Nack still counts until orphanGrace is over.
	orphans []*delivery
	timer   *time.Timer
	timerAt time.Time // when timer fires; zero: it is stopped
	cases   []reflect.SelectCase
	caseOf  []selectCase
	// serviceTime is a moving average of how long a delivery takes from
	// hand-out to Ack or Nack, in nanoseconds; 0 until the first one.
	serviceTime float64
	// recent are the last acked deliveries' durations (ns), next to be
	// overwritten at recentAt: read-ahead is handed back only when all of
	// them were slow, not for one pause.
	recent   [8]float64
	recentAt int
}

// consumer is one Subscribe call: an output channel and what it holds.
type consumer struct {
	ctx context.Context
	out chan *message.Message

	offer      *message.Message // the head, prepared for this consumer
	offerCtx   *messageContext
	offerEntry *inboxEntry

	inflight []*delivery // delivered, not yet acked or nacked
}

// delivery is a message handed to a consumer and not yet settled.
type delivery struct {
	c     *consumer
	entry *inboxEntry
	msg   *message.Message
	// ctx is the context given to msg. Once handed out, msg belongs to the
	// consumer, which may replace its context (a Router does): the inbox
	// keeps its own reference.
	ctx     *messageContext
	start   time.Time
	settled bool // acked, nacked or taken back; later results are stale
	// abandon, once its consumer left, is closed when the delivery ends,
	// to stop the goroutine watching it (see watchOrphan).
	abandon chan struct{}
	// orphanedUntil is set when the consumer's Subscribe ended while it
	// had the message: it is taken back then, unless settled first.
	orphanedUntil time.Time
}

type ackResult struct {
	d     *delivery
	acked bool
}

func newTopicInbox(owner inboxOwner, config inboxConfig, closing <-chan struct{}) *topicInbox {
	t := &topicInbox{
		owner:   owner,
		config:  config,
		queue:   deque{limit: config.limit},
		wake:    make(chan struct{}, 1),
		space:   make(chan struct{}, 1),
		refresh: make(chan struct{}, 1),
		attach:  make(chan *consumer),
		results: make(chan ackResult, 64),
		closing: closing,
		done:    make(chan struct{}),
		timer:   time.NewTimer(time.Hour),
	}
	t.timer.Stop()
	return t
}

// push adds an entry, applying the overflow policy when the inbox is full.
// It never blocks on consumers.
func (t *topicInbox) push(e *inboxEntry) {
	if e.isolate {
		t.isolatedHeld.Add(1)
	}
	t.mu.Lock()
	var dropped []*inboxEntry
	for t.full(e) && t.config.overflow != overflowKeep {
		if t.config.overflow == DropNewest || t.queue.len() == 0 {
			// With DropOldest the oldest is normally first in the queue;
			// only when the dispatcher holds the single entry an inbox of
			// one can have is the new one dropped instead.
			dropped = append(dropped, e)
			break
		}
		dropped = append(dropped, t.queue.popFront())
	}
	taken := len(dropped) == 0 || dropped[len(dropped)-1] != e
	if taken {
		t.queue.pushBack(e)
	}
	t.mu.Unlock()

	for _, d := range dropped {
		t.owner.overflowed(d)
	}
	if taken {
		signal(t.wake)
	}
}

// full reports whether the queue has no room for e: too many entries, or
// too many bytes (a lone entry over the byte limit is let in, or it could
// never be delivered). The caller holds mu.
func (t *topicInbox) full(e *inboxEntry) bool {
	if t.queue.len()+btoi(t.headHeld) >= t.queue.limit {
		return true
	}
	return t.config.bytes > 0 && t.queue.len() > 0 && t.queue.bytes+e.size() > t.config.bytes
}

// want returns how many entries the reader of a pull inbox should read
// now; 0 means none. Reads are held back until a good batch is due (half
// the target missing), unless a consumer is idle for want of entries.
// recovering readers take only what free consumers start at once.
func (t *topicInbox) want(recovering bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.wantLocked(recovering)
}

func (t *topicInbox) wantLocked(recovering bool) int {
	if t.headBlocked {
		return 0 // nothing could start before its delay ends
	}
	waiting := t.queue.len() + btoi(t.headHeld)
	free := t.freeSlots
	if t.isolatedHeld.Load() > 0 {
		free = 0 // nothing else starts before an isolated entry ran
	}
	target := free + t.ahead
	if recovering {
		// Taking counts a delivery (see lua/take.lua): only what the
		// handlers start now, so that a crash leaves every count exact.
		target = free
	}
	// Whatever the targets say, never hold more than the limit waiting
	// and a full set of deliveries in flight.
	room := t.queue.limit + t.slots - waiting - t.delayedN - t.inflightN
	deficit := min(target-waiting, room)
	switch {
	case deficit <= 0:
		return 0
	case waiting == 0 && free > 0, 2*deficit >= target:
		return deficit
	}
	return 0
}

// waitWant blocks until the reader should read, and returns how much; 0
// means closing.
func (t *topicInbox) waitWant(recovering func() bool, closing <-chan struct{}) int {
	for {
		if n := t.want(recovering()); n > 0 {
			return n
		}
		select {
		case <-t.space:
		case <-closing:
			return 0
		}
	}
}

// poke makes the dispatcher look at its entries again: the owner confirmed
// or lost some.
func (t *topicInbox) poke() { signal(t.refresh) }

func (t *topicInbox) buffered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.queue.len() + btoi(t.headHeld)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// subscribe attaches a consumer; it fails only once the subscriber closed.
func (t *topicInbox) subscribe(ctx context.Context) (<-chan *message.Message, error) {
	c := &consumer{ctx: ctx, out: make(chan *message.Message)}
	select {
	case t.attach <- c:
		return c.out, nil
	case <-t.done:
		return nil, ErrSubscriberClosed
	}
}

// run is the dispatcher loop.
func (t *topicInbox) run() {
	defer close(t.done)
	defer t.shutdown()

	for {
		t.releaseDueDelayed()
		t.takeBackOrphans()
		if t.head != nil && t.head.lost.Load() {
			t.dropHead()
		}
		// Only take a head when someone can take it: an entry nobody is
		// being offered stays in the queue, where DropOldest can reach it.
		if t.head == nil && len(t.consumers) > 0 {
			t.head = t.pop()
		}
		if t.config.surrender {
			t.surrenderExcess()
		}
		t.publish()
		if !t.handle(t.wait()) {
			return
		}
	}
}

// pop takes the next entry from the queue to become the head. It is called
// whenever there is no head, so it also ends the count of the previous one.
func (t *topicInbox) pop() *inboxEntry {
	t.mu.Lock()
	e := t.queue.popFront()
	for e != nil && e.lost.Load() {
		t.leaveIsolation(e)
		e = t.queue.popFront() // someone else's now: forget it
	}
	t.headHeld = e != nil
	t.mu.Unlock()
	return e
}

// takeBackOrphans takes back the messages whose consumer left and whose
// handler has not settled them within orphanGrace.
func (t *topicInbox) takeBackOrphans() {
	if len(t.orphans) == 0 {
		return
	}
	now := time.Now()
	for _, d := range slices.Clone(t.orphans) {
		if !d.orphanedUntil.After(now) {
			t.removeDelivery(d)
			t.owner.takenBack(d.entry)
			t.requeue(d.entry, 0)
		}
	}
}

// releaseDueDelayed moves delayed entries whose time has come to the front
// of the queue, so a due entry never waits for a timer that keeps firing.
func (t *topicInbox) releaseDueDelayed() {
	if len(t.delayed) == 0 {
		return
	}
	now := time.Now()
	n := 0
	for n < len(t.delayed) && !t.delayed[n].notBefore.After(now) {
		n++
	}
	if n == 0 {
		return
	}
	t.mu.Lock()
	for i := n - 1; i >= 0; i-- {
		t.queue.pushFront(t.delayed[i])
	}
	t.mu.Unlock()
	t.delayed = append(t.delayed[:0], t.delayed[n:]...)
	signal(t.wake)
}

// publish updates what want reads and wakes the reader when it should
// read. The read-ahead target follows the measured service time: enough
// entries to keep every consumer slot busy for readAhead.
func (t *topicInbox) publish() {
	if !t.config.pull {
		return
	}
	slots, inflight := len(t.consumers)*t.config.maxInFlight, len(t.orphans)
	free := 0
	for _, c := range t.consumers {
		inflight += len(c.inflight)
		free += max(0, t.config.maxInFlight-len(c.inflight))
	}
	ahead := 0
	switch {
	case slots == 0 || t.config.readAhead < 0:
	case t.config.fixedAhead:
		ahead = t.config.limit
	case t.serviceTime > 0:
		ahead = t.aheadFor(slots, t.serviceTime)
	}
	t.mu.Lock()
	t.delayedN, t.inflightN, t.slots, t.freeSlots, t.ahead = len(t.delayed), inflight, slots, free, ahead
	t.headBlocked = t.headHeldBack()
	read := t.wantLocked(false) > 0
	t.mu.Unlock()
	if read {
		signal(t.space)
	}
}

// surrenderWaiting hands every entry waiting here back to the owner: no
// consumer is attached, and entries held without one only keep other
// processes from them.
func (t *topicInbox) surrenderWaiting() {
	t.mu.Lock()
	var entries []*inboxEntry
	if t.head != nil {
		entries = append(entries, t.head)
		t.head = nil
	}
	for e := t.queue.popFront(); e != nil; e = t.queue.popFront() {
		entries = append(entries, e)
	}
	t.headHeld = false
	t.mu.Unlock()
	entries = append(entries, t.delayed...)
	t.delayed = nil
	for _, e := range entries {
		if e.isolate {
			t.isolatedHeld.Add(-1) // counted again if it is pushed back
		}
	}
	if len(entries) > 0 {
		t.owner.surrender(entries, true)
	}
}

// excessSlack is how far the entries waiting may exceed four times what
// the inbox wants before the rest is handed back.
const excessSlack = 2

// surrenderExcess hands back entries nobody here will start soon, newest
// first, so that other processes take them: all of them while no consumer
// is attached, those behind a nacked head that holds the queue for long,
// and, when the handlers turned out slower than they were taking (all of
// the last few deliveries slow, so not for one pause), those beyond four
// times the target.
func (t *topicInbox) surrenderExcess() {
	if len(t.consumers) == 0 {
		t.surrenderWaiting()
		return
	}
	var keep int
	switch {
	case t.headHeldBack():
		keep = 1 // the head
	case t.recentAt < len(t.recent) || t.config.fixedAhead || t.config.readAhead < 0:
		return
	default:
		ahead := t.aheadFor(t.slotsNow(), slices.Min(t.recent[:]))
		keep = 4*(t.freeSlots+ahead) + excessSlack
	}
	t.mu.Lock()
	var entries []*inboxEntry
	for t.queue.len()+btoi(t.headHeld) > keep {
		e := t.queue.popBack()
		if e.isolate {
			t.isolatedHeld.Add(-1)
		}
		entries = append(entries, e)
	}
	t.mu.Unlock()
	if len(entries) > 0 {
		t.owner.surrender(entries, false)
	}
}

// aheadFor is how many entries slots consumers start within the
// read-ahead window when a delivery takes serviceTime (ns), rounded: the
// window is readAhead and, against a distant Redis, one round trip more.
func (t *topicInbox) aheadFor(slots int, serviceTime float64) int {
	window := t.config.readAhead
	if t.config.roundTrip != nil {
		window += t.config.roundTrip()
	}
	return int(min(float64(t.config.limit), math.Round(float64(slots)*float64(window)/serviceTime)))
}

// headHeldBack reports whether a nacked head holds the queue for longer
// than handBackAfter.
func (t *topicInbox) headHeldBack() bool {
	return t.config.handBackAfter > 0 && t.head != nil && time.Until(t.head.notBefore) > t.config.handBackAfter
}

// leaveIsolation ends e's claim to run alone: it ran, or it is gone.
func (t *topicInbox) leaveIsolation(e *inboxEntry) {
	if e != nil && e.isolate {
		e.isolate = false
		t.isolatedHeld.Add(-1)
	}
}

type eventKind int

const (
	evClosing eventKind = iota
	evAttach
	evWake
	evTimer
	evRefresh
	evResult
	evSent
	evAcked
	evNacked
	evDetached
)

type event struct {
	kind   eventKind
	c      *consumer
	result ackResult
}

// selectCase says what a dynamic select case means.
type selectCase struct {
	kind eventKind
	c    *consumer
}

// headReady reports whether the head may be offered now, and arms the timer
// for the earliest moment something that waits changes: a nacked entry
// becomes due, or the head's ownership needs confirming again.
func (t *topicInbox) headReady() bool {
	var next time.Time
	ready := t.head != nil
	var now time.Time
	if t.config.pull || len(t.delayed) > 0 || len(t.orphans) > 0 || t.head != nil && !t.head.notBefore.IsZero() {
		now = time.Now() // only when something waits for a time: it costs
	}
	if e := t.head; e != nil {
		switch {
		case e.lost.Load():
			ready = false
		case e.notBefore.After(now):
			ready, next = false, e.notBefore
		case !e.isFresh(now):
			ready = false
			t.owner.stale(e) // the owner pokes us once Redis answered
		case e.freshUntil.Load() != 0:
			next = time.Unix(0, e.freshUntil.Load())
		}
		if ready && (t.isolated > 0 || e.isolate && t.inflight() > 0) {
			ready = false // an isolated entry runs alone
		}
		if ready && !t.owner.mayHandOut(e) {
			ready = false
		}
	}
	if len(t.delayed) > 0 && (next.IsZero() || t.delayed[0].notBefore.Before(next)) {
		next = t.delayed[0].notBefore
	}
	for _, d := range t.orphans {
		if next.IsZero() || d.orphanedUntil.Before(next) {
			next = d.orphanedUntil
		}
	}
	t.armTimer(next, now)
	return ready
}

// armTimer sets the timer to fire at next (never, when zero). Entries read
// together share their deadlines, so most calls find it set already.
func (t *topicInbox) armTimer(next, now time.Time) {
	if next.Equal(t.timerAt) {
		return
	}
	t.timerAt = next
	if next.IsZero() {
		t.timer.Stop()
		return
	}
	t.timer.Reset(max(next.Sub(now), 0))
}

func (t *topicInbox) slotsNow() int { return len(t.consumers) * t.config.maxInFlight }

func (t *topicInbox) inflight() int {
	n := len(t.orphans)
	for _, c := range t.consumers {
		n += len(c.inflight)
	}
	return n
}

// hasRoom reports whether c may take another message.
func (t *topicInbox) hasRoom(c *consumer) bool {
	return len(c.inflight) < t.config.maxInFlight
}

// wait blocks until something happens to the inbox or its consumers. With at
// most one consumer, as under a Router, it uses a plain select; with more it
// builds the select dynamically.
func (t *topicInbox) wait() event {
	ready := t.headReady()
	var wake chan struct{}
	if t.head == nil && (len(t.consumers) > 0 || t.config.surrender) {
		wake = t.wake
	}
	var results chan ackResult
	if t.config.maxInFlight > 1 || len(t.orphans) > 0 {
		results = t.results
	}
	if len(t.consumers) > 1 {
		return t.waitMany(ready, wake, results)
	}

	var c *consumer
	var out chan<- *message.Message
	var offer *message.Message
	var acked, nacked, detached <-chan struct{}
	if len(t.consumers) == 1 {
		c = t.consumers[0]
		detached = c.ctx.Done()
		if ready && t.hasRoom(c) {
			offer = t.offerFor(c)
			if offer != nil {
				out = c.out
			}
		}
		if t.config.maxInFlight == 1 && len(c.inflight) == 1 {
			acked, nacked = c.inflight[0].msg.Acked(), c.inflight[0].msg.Nacked()
		}
	}

	select {
	case <-t.closing:
		return event{kind: evClosing}
	case nc := <-t.attach:
		return event{kind: evAttach, c: nc}
	case <-wake:
		return event{kind: evWake}
	case <-t.timer.C:
		t.timerAt = time.Time{}
		return event{kind: evTimer}
	case <-t.refresh:
		return event{kind: evRefresh}
	case r := <-results:
		return event{kind: evResult, result: r}
	case out <- offer:
		return event{kind: evSent, c: c}
	case <-acked:
		return event{kind: evAcked, c: c}
	case <-nacked:
		return event{kind: evNacked, c: c}
	case <-detached:
		return event{kind: evDetached, c: c}
	}
}

func (t *topicInbox) waitMany(ready bool, wake chan struct{}, results chan ackResult) event {
	t.cases, t.caseOf = t.cases[:0], t.caseOf[:0]
	add := func(kind eventKind, c *consumer, sc reflect.SelectCase) {
		t.cases = append(t.cases, sc)
		t.caseOf = append(t.caseOf, selectCase{kind: kind, c: c})
	}
	recv := func(ch any) reflect.SelectCase {
		return reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)}
	}
	add(evClosing, nil, recv(t.closing))
	add(evAttach, nil, recv(t.attach))
	add(evTimer, nil, recv(t.timer.C))
	add(evRefresh, nil, recv(t.refresh))
	if wake != nil {
		add(evWake, nil, recv(wake))
	}
	if results != nil {
		add(evResult, nil, recv(results))
	}
	for _, c := range t.consumers {
		if done := c.ctx.Done(); done != nil {
			add(evDetached, c, recv(done))
		}
		if ready && t.hasRoom(c) {
			if offer := t.offerFor(c); offer != nil {
				add(evSent, c, reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(c.out), Send: reflect.ValueOf(offer)})
			}
		}
		if t.config.maxInFlight == 1 && len(c.inflight) == 1 {
			add(evAcked, c, recv(c.inflight[0].msg.Acked()))
			add(evNacked, c, recv(c.inflight[0].msg.Nacked()))
		}
	}

	chosen, value, _ := reflect.Select(t.cases)
	ev := event{kind: t.caseOf[chosen].kind, c: t.caseOf[chosen].c}
	switch ev.kind {
	case evTimer:
		t.timerAt = time.Time{}
	case evAttach:
		ev.c = value.Interface().(*consumer)
	case evResult:
		ev.result = value.Interface().(ackResult)
	}
	return ev
}

// handle applies one event; it returns false when the dispatcher must stop.
func (t *topicInbox) handle(ev event) bool {
	c := ev.c
	switch ev.kind {
	case evClosing:
		return false
	case evAttach:
		t.consumers = append(t.consumers, c)
		t.owner.consumersChanged(len(t.consumers))
	case evWake, evTimer, evRefresh:
		// Loop around: the head is refilled, due, confirmed or lost.
	case evSent:
		t.sent(c)
	case evAcked:
		t.settle(c.inflight[0], true)
	case evNacked:
		t.settle(c.inflight[0], false)
	case evResult:
		if !ev.result.d.settled {
			t.settle(ev.result.d, ev.result.acked)
		}
	case evDetached:
		t.detach(c)
	}
	return true
}

// sent records that c took the head.
func (t *topicInbox) sent(c *consumer) {
	e := t.head
	d := &delivery{c: c, entry: e, msg: c.offer, ctx: c.offerCtx}
	if t.config.pull {
		d.start = time.Now() // for the read-ahead
	}
	c.offer, c.offerCtx, c.offerEntry = nil, nil, nil
	c.inflight = append(c.inflight, d)
	t.head = nil
	t.mu.Lock()
	t.headHeld = false
	t.mu.Unlock()
	t.withdrawOffers()
	e.reserved = false
	if e.isolate {
		t.isolated++
	}
	t.owner.delivered(e)
	if t.config.maxInFlight > 1 {
		t.startWatch(d)
	}
}

// startWatch reports the delivery's outcome through results, until it is
// taken back: for consumers that may hold several messages.
func (t *topicInbox) startWatch(d *delivery) {
	go t.watch(d, d.ctx.Done())
}

// watchOrphan keeps watching a delivery whose consumer left (its context is
// done) until abandon is closed.
func (t *topicInbox) watchOrphan(d *delivery) {
	d.abandon = make(chan struct{})
	go t.watch(d, d.abandon)
}

// dropHead forgets a head that is gone (someone else's now, or not
// deliverable), and wakes the loop to take the next.
func (t *topicInbox) dropHead() {
	t.withdrawOffers()
	t.leaveIsolation(t.head)
	t.head = nil
	t.mu.Lock()
	t.headHeld = false
	t.mu.Unlock()
	signal(t.wake)
}

// watch reports the outcome of a delivery; only consumers that may hold
// several messages, and orphans, need a goroutine for it.
func (t *topicInbox) watch(d *delivery, until <-chan struct{}) {
	var r ackResult
	select {
	case <-d.msg.Acked():
		r = ackResult{d: d, acked: true}
	case <-d.msg.Nacked():
		r = ackResult{d: d, acked: false}
	case <-until:
		return // taken back, or watched by another now
	case <-t.done:
		return
	}
	select {
	case t.results <- r:
	case <-t.done:
	}
}

// settle applies an Ack or a Nack.
func (t *topicInbox) settle(d *delivery, acked bool) {
	t.removeDelivery(d)
	t.leaveIsolation(d.entry) // it ran alone once; a Nack is an ordinary failure
	took := time.Duration(0)
	if t.config.pull {
		took = time.Since(d.start)
	}
	if acked {
		t.measure(took, true)
		t.owner.acked(d.entry)
		return
	}
	delay, redeliver := t.owner.nacked(d.entry, d.msg)
	if redeliver && delay > 0 && t.config.maxInFlight == 1 {
		// Ordered: the message holds its consumer's queue until its delay
		// ends, as long as work that took that long.
		t.measure(took+delay, true)
	} else {
		t.measure(took, false)
	}
	if redeliver {
		t.requeue(d.entry, delay)
	}
}

// measure adds one delivery's duration to the moving average of service
// times that sizes the read-ahead. It errs towards reading too little: a
// slower delivery counts at once, faster ones only gradually, and a Nack
// (often a quick failure, not work) only when it was slower.
func (t *topicInbox) measure(d time.Duration, acked bool) {
	if !t.config.pull {
		return
	}
	const up, down = 0.5, 0.05
	ns := float64(max(d, time.Microsecond))
	if acked {
		t.recent[t.recentAt%len(t.recent)] = ns
		t.recentAt++
	}
	switch {
	case t.serviceTime == 0:
		if acked {
			t.serviceTime = ns
		}
	case ns > t.serviceTime:
		t.serviceTime += up * (ns - t.serviceTime)
	case acked:
		t.serviceTime += down * (ns - t.serviceTime)
	}
}

// removeDelivery ends a delivery: its message's context is cancelled and
// its consumer gets room for another.
func (t *topicInbox) removeDelivery(d *delivery) {
	d.settled = true
	d.ctx.cancel()
	if d.abandon != nil {
		close(d.abandon)
	}
	if d.entry.isolate {
		t.isolated--
	}
	if !d.orphanedUntil.IsZero() {
		t.orphans = slices.DeleteFunc(t.orphans, func(x *delivery) bool { return x == d })
		return
	}
	for i, x := range d.c.inflight {
		if x == d {
			d.c.inflight = append(d.c.inflight[:i], d.c.inflight[i+1:]...)
			break
		}
	}
}

// requeue puts an unacked entry back. With ordered delivery it goes to the
// head, so it is the next one delivered, and holds the queue for its delay;
// otherwise it waits aside until its delay ends.
func (t *topicInbox) requeue(e *inboxEntry, delay time.Duration) {
	e.notBefore = time.Time{}
	if delay > 0 {
		e.notBefore = time.Now().Add(delay)
	}
	if delay > 0 && t.config.maxInFlight > 1 {
		i := len(t.delayed)
		for i > 0 && t.delayed[i-1].notBefore.After(e.notBefore) {
			i--
		}
		t.delayed = append(t.delayed, nil)
		copy(t.delayed[i+1:], t.delayed[i:])
		t.delayed[i] = e
		return
	}
	t.withdrawOffers()
	t.mu.Lock()
	if t.head != nil {
		t.queue.pushFront(t.head)
	}
	t.headHeld = true
	t.mu.Unlock()
	t.head = e
}

// detach removes a consumer whose context is done; what it held goes to the
// others, unless it was settled before the dispatcher noticed (a Router
// acks its last message and then cancels the subscription).
func (t *topicInbox) detach(c *consumer) {
	for i := len(c.inflight) - 1; i >= 0; i-- {
		d := c.inflight[i]
		select {
		case <-d.msg.Acked():
			t.settle(d, true)
			continue
		default:
		}
		if t.config.orphanGrace > 0 {
			// A Router stops a handler while it still runs: its Ack or Nack
			// counts. Its context ends, to tell it to stop.
			d.ctx.cancel()
			d.orphanedUntil = time.Now().Add(t.config.orphanGrace)
			t.orphans = append(t.orphans, d)
			t.watchOrphan(d)
			continue
		}
		t.removeDelivery(d)
		t.owner.takenBack(d.entry)
		t.requeue(d.entry, 0)
	}
	c.inflight = nil
	t.withdraw(c)
	close(c.out)
	for i, x := range t.consumers {
		if x == c {
			t.consumers = append(t.consumers[:i], t.consumers[i+1:]...)
			break
		}
	}
	if len(t.consumers) == 0 {
		t.parkHead()
	}
	t.owner.consumersChanged(len(t.consumers))
}

// parkHead returns the head to the queue when nobody is left to offer it to.
func (t *topicInbox) parkHead() {
	t.mu.Lock()
	if t.head != nil {
		t.queue.pushFront(t.head)
	}
	t.headHeld = false
	t.mu.Unlock()
	t.head = nil
}

// offerFor returns the head message prepared for c: a message of its own,
// with a context derived from c's Subscribe context. Nil means the head is
// gone (the owner could not make a message of it).
func (t *topicInbox) offerFor(c *consumer) *message.Message {
	if c.offer != nil && c.offerEntry == t.head {
		return c.offer
	}
	t.withdraw(c)
	msg := t.head.first
	t.head.first = nil
	if msg == nil {
		msg = t.owner.message(t.head)
	}
	if msg == nil {
		t.dropHead()
		return nil
	}
	ctx := newMessageContext(c.ctx)
	msg.SetContext(ctx)
	c.offer, c.offerCtx, c.offerEntry = msg, ctx, t.head
	return msg
}

func (t *topicInbox) withdrawOffers() {
	for _, c := range t.consumers {
		t.withdraw(c)
	}
}

func (t *topicInbox) withdraw(c *consumer) {
	if c.offer != nil {
		c.offerCtx.cancel()
		c.offer, c.offerCtx, c.offerEntry = nil, nil, nil
	}
}

// shutdown closes every output channel and cancels the contexts of the
// messages handed out, as Watermill expects on Close. An Ack that came just
// before Close still counts, even if the dispatcher had not seen it yet.
// An inbox that surrenders hands back what waits, and hands over what
// consumers still have.
func (t *topicInbox) shutdown() {
	t.timer.Stop()
	var unsettled []*delivery
	ended := func(d *delivery) {
		d.settled = true
		select {
		case <-d.msg.Acked():
			t.owner.acked(d.entry)
		default:
			unsettled = append(unsettled, d)
		}
		d.ctx.cancel()
	}
	for _, c := range t.consumers {
		t.withdraw(c)
		for _, d := range c.inflight {
			ended(d)
		}
		close(c.out)
	}
	for _, d := range t.orphans {
		ended(d)
	}
	t.orphans = nil
	t.consumers = nil
	t.owner.consumersChanged(0)
	if t.config.surrender {
		t.surrenderWaiting()
		t.owner.closedWithInFlight(unsettled)
	}
}

// deque is a bounded double-ended queue of entries on a ring buffer that
// grows on demand up to its limit.
type deque struct {
	limit int
	buf   []*inboxEntry
	head  int
	n     int
	bytes int // the sizes of the entries queued (see inboxEntry.size)
}

func (q *deque) len() int { return q.n }

func (q *deque) grow() {
	if q.n < len(q.buf) {
		return
	}
	size := max(16, 2*len(q.buf))
	buf := make([]*inboxEntry, size)
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

func (q *deque) pushBack(e *inboxEntry) {
	q.grow()
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
	q.bytes += e.size()
}

// pushFront may exceed limit by the few entries consumers hand back; that
// keeps a requeued message from being lost to its own Nack.
func (q *deque) pushFront(e *inboxEntry) {
	q.grow()
	q.head = (q.head - 1 + len(q.buf)) % len(q.buf)
	q.buf[q.head] = e
	q.n++
	q.bytes += e.size()
}

func (q *deque) popBack() *inboxEntry {
	if q.n == 0 {
		return nil
	}
	i := (q.head + q.n - 1) % len(q.buf)
	e := q.buf[i]
	q.buf[i] = nil
	q.n--
	q.bytes -= e.size()
	return e
}

func (q *deque) popFront() *inboxEntry {
	if q.n == 0 {
		return nil
	}
	e := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.bytes -= e.size()
	if q.n == 0 && len(q.buf) > 1024 {
		q.buf, q.head = nil, 0 // give a burst's memory back
	}
	return e
}
