package redisbus

import (
	"context"
	"reflect"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
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
	raw []byte           // the payload as received; decoded on first delivery
	msg *message.Message // decoded template; every delivery but the first is a copy
	// spent is set once msg itself was handed out: its Ack state is then
	// taken, so later deliveries use copies.
	spent     bool
	notBefore time.Time // a nacked message waits until then
}

// topicInbox holds one topic's messages in this process until they are
// acked, and hands them to the topic's consumers (Subscribe calls).
//
// The Redis read loop pushes into a bounded queue and never blocks. One
// dispatcher goroutine per topic owns the consumers: it offers the head of
// the queue to every idle consumer at once, and whichever reads first takes
// it. A consumer holds at most one unacked message, which keeps order per
// consumer and lets a consumer that stopped reading never strand a message
// that another could take. A nacked message goes back to the head of the
// queue; one whose consumer went away is handed to the next.
type topicInbox struct {
	topic  string
	sub    *Subscriber
	logger watermill.LoggerAdapter

	mu    sync.Mutex
	queue deque
	// headHeld is set while the dispatcher holds an entry popped from the
	// queue to offer it to consumers (head). It counts against InboxSize but
	// is never dropped: it is being delivered.
	headHeld bool
	wake     chan struct{} // capacity 1: the queue got a message

	attach  chan *consumer
	closing chan struct{} // closed by Subscriber.Close
	done    chan struct{} // closed when the dispatcher has exited

	confirmOnce sync.Once
	confirmed   chan struct{} // closed when Redis confirmed the subscription

	// Owned by the dispatcher goroutine.
	consumers []*consumer
	head      *inboxEntry // popped from the queue, waiting for a consumer
	timer     *time.Timer
	cases     []reflect.SelectCase
}

// consumer is one Subscribe call: an output channel and the message it holds.
type consumer struct {
	ctx context.Context
	out chan *message.Message

	offer       *message.Message // head, prepared for this consumer
	offerCancel context.CancelFunc

	inflight       *message.Message // delivered, not yet acked or nacked
	inflightCancel context.CancelFunc
	inflightEntry  *inboxEntry
}

func newTopicInbox(s *Subscriber, topic string) *topicInbox {
	t := &topicInbox{
		topic:     topic,
		sub:       s,
		logger:    s.logger.With(watermill.LogFields{"topic": topic}),
		queue:     deque{limit: s.config.InboxSize},
		wake:      make(chan struct{}, 1),
		attach:    make(chan *consumer),
		closing:   s.closing,
		done:      make(chan struct{}),
		confirmed: make(chan struct{}),
		timer:     time.NewTimer(time.Hour),
	}
	t.timer.Stop()
	return t
}

func (t *topicInbox) confirm() {
	t.confirmOnce.Do(func() { close(t.confirmed) })
}

// push adds a message that arrived from Redis, applying the overflow policy
// when the inbox is full. It never blocks on consumers.
func (t *topicInbox) push(raw []byte) {
	t.mu.Lock()
	full := t.queue.len()+btoi(t.headHeld) >= t.queue.limit
	// With DropOldest the oldest is normally first in the queue; only when
	// the dispatcher holds the single message an inbox of one can have is
	// the new one dropped instead.
	if full && (t.sub.config.InboxOverflow == DropNewest || t.queue.len() == 0) {
		t.mu.Unlock()
		t.sub.dropped(t, 1)
		return
	}
	if full {
		t.queue.popFront()
	}
	t.queue.pushBack(&inboxEntry{raw: raw})
	t.mu.Unlock()

	if full {
		t.sub.dropped(t, 1)
	}
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *topicInbox) buffered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.queue.len() + btoi(t.headHeld)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// subscribe attaches a consumer. It fails only when the Subscriber closes.
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
		// Only take a head when someone can take it: a message nobody is
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
	t.mu.Lock()
	e := t.queue.popFront()
	t.headHeld = e != nil
	t.mu.Unlock()
	if e != nil && e.msg == nil {
		e.msg = t.sub.decode(t, e.raw)
		e.raw = nil
	}
	return e
}

type eventKind int

const (
	evClosing eventKind = iota
	evAttach
	evWake
	evTimer
	evSent
	evAcked
	evNacked
	evDetached
)

type event struct {
	kind eventKind
	c    *consumer
}

// headReady reports whether the head may be offered now, arming the timer
// when it has to wait after a Nack.
func (t *topicInbox) headReady() bool {
	if t.head == nil {
		return false
	}
	if wait := time.Until(t.head.notBefore); wait > 0 {
		t.timer.Reset(wait)
		return false
	}
	return true
}

// wait blocks until something happens to the inbox or its consumers. With at
// most one consumer, as under a Router, it uses a plain select; with more it
// builds the select dynamically.
func (t *topicInbox) wait() event {
	ready := t.headReady()
	var wake chan struct{}
	if t.head == nil && len(t.consumers) > 0 {
		wake = t.wake
	}
	if len(t.consumers) > 1 {
		return t.waitMany(ready, wake)
	}

	var c *consumer
	var out chan<- *message.Message
	var offer *message.Message
	var acked, nacked, detached <-chan struct{}
	if len(t.consumers) == 1 {
		c = t.consumers[0]
		detached = c.ctx.Done()
		switch {
		case c.inflight != nil:
			acked, nacked = c.inflight.Acked(), c.inflight.Nacked()
		case ready:
			offer, out = t.offerFor(c), c.out
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

const fixedCases = 4 // closing, attach, wake, timer; then 3 per consumer

func (t *topicInbox) waitMany(ready bool, wake chan struct{}) event {
	cases := append(t.cases[:0],
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(t.closing)},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(t.attach)},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(wake)},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(t.timer.C)},
	)
	none := reflect.SelectCase{Dir: reflect.SelectRecv} // no channel: never fires
	for _, c := range t.consumers {
		detached := reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.ctx.Done())}
		switch {
		case c.inflight != nil:
			cases = append(cases, detached,
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.inflight.Acked())},
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.inflight.Nacked())})
		case ready:
			cases = append(cases, detached,
				reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(c.out), Send: reflect.ValueOf(t.offerFor(c))},
				none)
		default:
			cases = append(cases, detached, none, none)
		}
	}
	t.cases = cases

	chosen, recv, _ := reflect.Select(cases)
	switch chosen {
	case 0:
		return event{kind: evClosing}
	case 1:
		return event{kind: evAttach, c: recv.Interface().(*consumer)}
	case 2:
		return event{kind: evWake}
	case 3:
		return event{kind: evTimer}
	}
	i := chosen - fixedCases
	c := t.consumers[i/3]
	switch {
	case i%3 == 0:
		return event{kind: evDetached, c: c}
	case c.inflight == nil:
		return event{kind: evSent, c: c}
	case i%3 == 1:
		return event{kind: evAcked, c: c}
	default:
		return event{kind: evNacked, c: c}
	}
}

// handle applies one event; it returns false when the dispatcher must stop.
func (t *topicInbox) handle(ev event) bool {
	c := ev.c
	switch ev.kind {
	case evClosing:
		return false
	case evAttach:
		t.consumers = append(t.consumers, c)
	case evWake, evTimer:
		// Loop around: the head is refilled or now ready.
	case evSent:
		c.inflight, c.inflightCancel, c.inflightEntry = c.offer, c.offerCancel, t.head
		c.offer, c.offerCancel = nil, nil
		t.head = nil
		t.withdrawOffers()
		t.sub.stats.delivered.Add(1)
	case evAcked:
		c.inflightCancel()
		c.inflight, c.inflightCancel, c.inflightEntry = nil, nil, nil
		t.sub.stats.acked.Add(1)
	case evNacked:
		t.sub.stats.nacked.Add(1)
		t.requeue(c, t.sub.config.NackResendDelay)
	case evDetached:
		if c.inflight != nil {
			t.requeue(c, 0)
		}
		t.withdraw(c)
		close(c.out)
		t.removeConsumer(c)
		if len(t.consumers) == 0 {
			t.parkHead()
		}
	}
	return true
}

// requeue puts c's unacked message back at the head of the inbox, so it is
// the next one delivered.
func (t *topicInbox) requeue(c *consumer, delay time.Duration) {
	e := c.inflightEntry
	c.inflightCancel()
	c.inflight, c.inflightCancel, c.inflightEntry = nil, nil, nil

	t.withdrawOffers()
	t.mu.Lock()
	if t.head != nil {
		t.queue.pushFront(t.head)
	}
	t.headHeld = true
	t.mu.Unlock()
	e.notBefore = time.Time{}
	if delay > 0 {
		e.notBefore = time.Now().Add(delay)
	}
	t.head = e
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
	ctx, cancel := context.WithCancel(c.ctx)
	msg.SetContext(ctx)
	c.offer, c.offerCancel = msg, cancel
	return msg
}

func (t *topicInbox) withdrawOffers() {
	for _, c := range t.consumers {
		t.withdraw(c)
	}
}

func (t *topicInbox) withdraw(c *consumer) {
	if c.offer != nil {
		c.offerCancel()
		c.offer, c.offerCancel = nil, nil
	}
}

func (t *topicInbox) removeConsumer(c *consumer) {
	for i, x := range t.consumers {
		if x == c {
			t.consumers = append(t.consumers[:i], t.consumers[i+1:]...)
			return
		}
	}
}

// shutdown closes every output channel and cancels the contexts of the
// messages handed out, as Watermill expects on Close.
func (t *topicInbox) shutdown() {
	t.timer.Stop()
	for _, c := range t.consumers {
		t.withdraw(c)
		if c.inflight != nil {
			c.inflightCancel()
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
