package redisbus

import (
	"context"
	"reflect"
	"sync"
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

// overflowKeep never drops: for readers that bound themselves by free, where
// a race between two of them may only exceed the limit by a batch.
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
type inboxEntry struct {
	// msg is the decoded message. The first delivery hands out msg itself;
	// once spent, its Ack state is taken and later deliveries use copies.
	msg   *message.Message
	spent bool

	id         string    // stream entry ID (Streams only)
	deliveries int       // times handed to a consumer, as Redis counts them for Streams
	notBefore  time.Time // a nacked message waits until then
}

// inboxOwner is what a topicInbox reports to and asks: the Pub/Sub
// Subscriber, or one topic of a Streams subscriber. Its methods run on the
// dispatcher goroutine and must not block.
type inboxOwner interface {
	// prepare adds per-delivery metadata to msg, about to be offered for e.
	prepare(e *inboxEntry, msg *message.Message)
	delivered(e *inboxEntry)
	acked(e *inboxEntry)
	// nacked decides when e is offered again; redeliver false means the
	// owner took it (e.g. to a dead-letter stream).
	nacked(e *inboxEntry) (delay time.Duration, redeliver bool)
	// overflowed reports an entry the overflow policy dropped.
	overflowed(e *inboxEntry)
	// consumersChanged reports how many Subscribe calls are attached.
	consumersChanged(n int)
}

// inboxConfig sizes an inbox.
type inboxConfig struct {
	limit    int            // entries waiting in the queue, the head included
	overflow OverflowPolicy // when push finds the queue full
	// maxInFlight is how many unacked messages a consumer may hold. With 1
	// (the ordered default) a consumer gets its next message only after
	// the previous one was acked or nacked.
	maxInFlight int
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
type topicInbox struct {
	owner  inboxOwner
	config inboxConfig

	mu    sync.Mutex
	queue deque
	// headHeld is set while the dispatcher holds an entry popped from the
	// queue to offer it (head). It counts against the limit but is never
	// dropped: it is being delivered.
	headHeld bool
	wake     chan struct{} // capacity 1: the queue got an entry
	space    chan struct{} // capacity 1: the queue lost an entry

	attach  chan *consumer
	results chan ackResult // acks of consumers with maxInFlight > 1
	closing <-chan struct{}
	done    chan struct{} // closed when the dispatcher has exited

	// Owned by the dispatcher goroutine.
	consumers []*consumer
	head      *inboxEntry
	delayed   []*inboxEntry // nacked entries waiting aside (maxInFlight > 1)
	timer     *time.Timer
	cases     []reflect.SelectCase
	caseOf    []selectCase
}

// consumer is one Subscribe call: an output channel and what it holds.
type consumer struct {
	ctx context.Context
	out chan *message.Message

	offer    *message.Message // the head, prepared for this consumer
	offerCtx *messageContext

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
	settled bool // acked, nacked or taken back; later results are stale
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
// It never blocks on consumers. Readers that must not lose entries check
// free first.
func (t *topicInbox) push(e *inboxEntry) {
	t.mu.Lock()
	full := t.queue.len()+btoi(t.headHeld) >= t.queue.limit
	var dropped *inboxEntry
	switch {
	case !full || t.config.overflow == overflowKeep:
	case t.config.overflow == DropNewest || t.queue.len() == 0:
		// With DropOldest the oldest is normally first in the queue; only
		// when the dispatcher holds the single entry an inbox of one can
		// have is the new one dropped instead.
		dropped = e
	default:
		dropped = t.queue.popFront()
	}
	if dropped != e {
		t.queue.pushBack(e)
	}
	t.mu.Unlock()

	if dropped != nil {
		t.owner.overflowed(dropped)
	}
	if dropped != e {
		signal(t.wake)
	}
}

// free returns how many entries fit before the inbox is full.
func (t *topicInbox) free() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.queue.limit - t.queue.len() - btoi(t.headHeld)
}

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
		// Only take a head when someone can take it: an entry nobody is
		// being offered stays in the queue, where DropOldest can reach it.
		if t.head == nil && len(t.consumers) > 0 {
			t.head = t.pop()
		}
		if !t.handle(t.wait()) {
			return
		}
	}
}

// pop takes the next entry from the queue to become the head. It is called
// whenever there is no head, so it also ends the count of the previous one.
func (t *topicInbox) pop() *inboxEntry {
	t.releaseDueDelayed()
	t.mu.Lock()
	e := t.queue.popFront()
	t.headHeld = e != nil
	t.mu.Unlock()
	if e != nil {
		signal(t.space)
	}
	return e
}

// releaseDueDelayed moves delayed entries whose time has come to the front
// of the queue.
func (t *topicInbox) releaseDueDelayed() {
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
}

type eventKind int

const (
	evClosing eventKind = iota
	evAttach
	evWake
	evTimer
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

// armTimer reports whether the head may be offered now, and arms the timer
// for the earliest moment something that waits becomes due.
func (t *topicInbox) armTimer() (headReady bool) {
	var next time.Time
	headReady = t.head != nil
	if t.head != nil && time.Until(t.head.notBefore) > 0 {
		headReady = false
		next = t.head.notBefore
	}
	if len(t.delayed) > 0 && (next.IsZero() || t.delayed[0].notBefore.Before(next)) {
		next = t.delayed[0].notBefore
	}
	if !next.IsZero() {
		t.timer.Reset(max(time.Until(next), 0))
	}
	return headReady
}

// hasRoom reports whether c may take another message.
func (t *topicInbox) hasRoom(c *consumer) bool {
	return len(c.inflight) < t.config.maxInFlight
}

// wait blocks until something happens to the inbox or its consumers. With at
// most one consumer, as under a Router, it uses a plain select; with more it
// builds the select dynamically.
func (t *topicInbox) wait() event {
	ready := t.armTimer()
	var wake chan struct{}
	if t.head == nil && len(t.consumers) > 0 {
		wake = t.wake
	}
	var results chan ackResult
	if t.config.maxInFlight > 1 {
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
			offer, out = t.offerFor(c), c.out
		}
		if results == nil && len(c.inflight) == 1 {
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
		return event{kind: evTimer}
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
			add(evSent, c, reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(c.out), Send: reflect.ValueOf(t.offerFor(c))})
		}
		if results == nil && len(c.inflight) == 1 {
			add(evAcked, c, recv(c.inflight[0].msg.Acked()))
			add(evNacked, c, recv(c.inflight[0].msg.Nacked()))
		}
	}

	chosen, value, _ := reflect.Select(t.cases)
	ev := event{kind: t.caseOf[chosen].kind, c: t.caseOf[chosen].c}
	switch ev.kind {
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
	case evWake, evTimer:
		// Loop around: the head is refilled or now ready.
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
	d := &delivery{c: c, entry: t.head, msg: c.offer, ctx: c.offerCtx}
	c.offer, c.offerCtx = nil, nil
	c.inflight = append(c.inflight, d)
	t.head = nil
	t.withdrawOffers()
	t.owner.delivered(d.entry)
	if t.config.maxInFlight > 1 {
		go t.watch(d)
	}
}

// watch reports the outcome of a delivery; only consumers that may hold
// several messages need a goroutine for it.
func (t *topicInbox) watch(d *delivery) {
	var r ackResult
	select {
	case <-d.msg.Acked():
		r = ackResult{d: d, acked: true}
	case <-d.msg.Nacked():
		r = ackResult{d: d, acked: false}
	case <-d.ctx.Done():
		return // taken back: the consumer left or the inbox closed
	}
	select {
	case t.results <- r:
	case <-t.done:
	}
}

// settle applies an Ack or a Nack.
func (t *topicInbox) settle(d *delivery, acked bool) {
	t.removeDelivery(d)
	if acked {
		t.owner.acked(d.entry)
		return
	}
	delay, redeliver := t.owner.nacked(d.entry)
	if redeliver {
		t.requeue(d.entry, delay)
	}
}

// removeDelivery ends a delivery: its message's context is cancelled and
// its consumer gets room for another.
func (t *topicInbox) removeDelivery(d *delivery) {
	d.settled = true
	d.ctx.cancel()
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
		t.removeDelivery(d)
		t.requeue(d.entry, 0)
	}
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

// offerFor returns the head message prepared for c: its own copy, with a
// context derived from c's Subscribe context.
func (t *topicInbox) offerFor(c *consumer) *message.Message {
	if c.offer != nil {
		return c.offer
	}
	msg := t.head.msg
	if t.head.spent {
		msg = msg.Copy()
	}
	t.head.spent = true
	t.owner.prepare(t.head, msg)
	ctx := newMessageContext(c.ctx)
	msg.SetContext(ctx)
	c.offer, c.offerCtx = msg, ctx
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
		c.offer, c.offerCtx = nil, nil
	}
}

// shutdown closes every output channel and cancels the contexts of the
// messages handed out, as Watermill expects on Close. An Ack that came just
// before Close still counts, even if the dispatcher had not seen it yet.
func (t *topicInbox) shutdown() {
	t.timer.Stop()
	for _, c := range t.consumers {
		t.withdraw(c)
		for _, d := range c.inflight {
			d.settled = true
			select {
			case <-d.msg.Acked():
				t.owner.acked(d.entry)
			default:
			}
			d.ctx.cancel()
		}
		close(c.out)
	}
	t.consumers = nil
}

// deque is a bounded double-ended queue of entries on a ring buffer that
// grows on demand up to its limit.
type deque struct {
	limit int
	buf   []*inboxEntry
	head  int
	n     int
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
}

// pushFront may exceed limit by the few entries consumers hand back; that
// keeps a requeued message from being lost to its own Nack.
func (q *deque) pushFront(e *inboxEntry) {
	q.grow()
	q.head = (q.head - 1 + len(q.buf)) % len(q.buf)
	q.buf[q.head] = e
	q.n++
}

func (q *deque) popFront() *inboxEntry {
	if q.n == 0 {
		return nil
	}
	e := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 && len(q.buf) > 1024 {
		q.buf, q.head = nil, 0 // give a burst's memory back
	}
	return e
}
