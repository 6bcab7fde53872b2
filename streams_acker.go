package redisbus

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/sendonce"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// Fields added to an entry moved to a dead-letter stream, next to the
// entry's own fields. Read with DefaultStreamsMarshaler, they become
// metadata of the dead letter.
const (
	DeadLetterFieldReason     = "redisbus_reason"        // why it was moved
	DeadLetterFieldStream     = "redisbus_origin_stream" // the stream it came from
	DeadLetterFieldID         = "redisbus_origin_id"     // its ID there
	DeadLetterFieldGroup      = "redisbus_group"         // the consumer group that gave up ("" in fan-out)
	DeadLetterFieldConsumer   = "redisbus_consumer"      // the consumer that moved it
	DeadLetterFieldDeliveries = "redisbus_deliveries"    // how often it had reached a handler, at most
)

// deadLetterMaxLen bounds dead-letter streams (MAXLEN ~).
const deadLetterMaxLen = 1_000_000

// ackBatchSize is how many operations fill a batch, which is then sent
// without waiting for AckFlushInterval.
const ackBatchSize = 512

// ackFinalFlush bounds how long Close tries to send what is left.
const ackFinalFlush = 5 * time.Second

// maxConcurrentReleases bounds the topics that hand their entries back at
// once on Close: one after the other, a round trip each, a subscriber of
// many topics would outlast Close's bound on a slow link. Under go-redis'
// smallest default pool (10 connections per CPU).
const maxConcurrentReleases = 8

// Retry backoff: acks (idempotent, and what most of them are) retry soon;
// dead letters that Redis refuses (full, or the key is not a stream) wait
// longer, as the cause rarely goes away in milliseconds.
const (
	ackRetryMin        = 10 * time.Millisecond
	ackRetryMax        = time.Second
	deadLetterRetryMin = 100 * time.Millisecond
	deadLetterRetryMax = 10 * time.Second
)

type ackKind int

const (
	opAck        ackKind = iota // XACK
	opDeliveries                // record a delivery count after a Nack
	opDeadLetter                // XADD a copy to the dead-letter stream; once stored, XACK
	opRelease                   // hand an entry back to the group
	opReschedule                // store a copy as a delayed message; once stored, XACK
)

// ackOp is one write the subscriber owes Redis for an entry.
type ackOp struct {
	kind  ackKind
	topic *streamsTopic
	id    string
	// entry is the held entry, held until the operation is done.
	entry  *inboxEntry
	count  string    // opDeliveries: the count to record; opRelease: that or "-"
	reason string    // opDeadLetter
	later  scheduled // opReschedule
	// counted says the ack is in its topic's acksUnsent.
	counted bool
	// idle says a release is for want of a consumer.
	idle bool

	failures  int
	notBefore time.Time // retry no earlier
}

// streamsAcker sends a subscriber's acks, delivery counts, dead letters and
// hand-backs in batches: whatever accumulated within AckFlushInterval of the
// first one goes in one round trip (scripts: one call per stream). Each
// operation that fails is retried on its own, with backoff: a dead letter
// Redis refuses does not hold up acks, of its stream or any other. What is
// still unsent when Close gives up stays pending in Redis and is delivered
// again, which at-least-once allows.
type streamsAcker struct {
	s *StreamsSubscriber

	mu   sync.Mutex
	ops  []ackOp
	wake chan struct{} // capacity 1: an operation arrived
	full chan struct{} // capacity 1: a batch is full
	stop chan struct{}
	done chan struct{}
	once sync.Once

	// Owned by run.
	retry         *time.Timer
	lastAckError  time.Time
	deadLetterErr map[*streamsTopic]string // the last dead-letter error logged per topic
}

func newStreamsAcker(s *StreamsSubscriber) *streamsAcker {
	a := &streamsAcker{
		s:             s,
		wake:          make(chan struct{}, 1),
		full:          make(chan struct{}, 1),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
		retry:         time.NewTimer(time.Hour),
		deadLetterErr: map[*streamsTopic]string{},
	}
	a.retry.Stop()
	go a.run()
	return a
}

// ack acks e in the group, and then stops holding it.
func (a *streamsAcker) ack(t *streamsTopic, e *inboxEntry) {
	t.acksUnsent.Add(1)
	a.add(ackOp{kind: opAck, topic: t, id: e.id, entry: e, counted: true})
}

// flushSoon sends what is queued without waiting for AckFlushInterval.
func (a *streamsAcker) flushSoon() {
	signal(a.wake)
	signal(a.full)
}

// recordDeliveries records e's delivery count after a Nack.
func (a *streamsAcker) recordDeliveries(t *streamsTopic, e *inboxEntry) {
	a.add(ackOp{kind: opDeliveries, topic: t, id: e.id, count: strconv.Itoa(e.deliveries)})
}

func (a *streamsAcker) deadLetter(t *streamsTopic, e *inboxEntry, reason string) {
	a.add(ackOp{kind: opDeadLetter, topic: t, id: e.id, entry: e, reason: reason})
}

// reschedule stores a copy of e to come back later, and then acks e.
func (a *streamsAcker) reschedule(t *streamsTopic, e *inboxEntry, later scheduled) {
	a.add(ackOp{kind: opReschedule, topic: t, id: e.id, entry: e, later: later})
}

// release hands entries back to the group. It runs on the dispatcher,
// which owns the entries' state. Entries released because no consumer was
// attached are kept if one is again by the time they would go.
func (a *streamsAcker) release(t *streamsTopic, entries []*inboxEntry, idle bool) {
	for _, e := range entries {
		a.add(ackOp{kind: opRelease, topic: t, id: e.id, entry: e, count: releaseCount(e), idle: idle})
	}
}

// releaseCount is the delivery count to record when e is handed back: one
// less when its count includes a delivery that did not happen.
func releaseCount(e *inboxEntry) string {
	if e.reserved {
		return strconv.Itoa(max(e.deliveries-1, 0))
	}
	return "-"
}

func (a *streamsAcker) add(op ackOp) {
	a.mu.Lock()
	a.ops = append(a.ops, op)
	n := len(a.ops)
	a.mu.Unlock()
	signal(a.wake)
	if n >= ackBatchSize {
		signal(a.full)
	}
}

// close sends what is left, hands back every entry the topics still hold
// and gives up their consumer names, then stops the acker.
func (a *streamsAcker) close(topics []*streamsTopic) {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
		a.finish(topics)
	})
}

func (a *streamsAcker) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ops)
}

func (a *streamsAcker) run() {
	defer close(a.done)
	for {
		select {
		case <-a.wake:
		case <-a.retry.C:
		case <-a.stop:
			return
		}
		// Let more operations join the batch, unless it fills first.
		timer := time.NewTimer(a.s.config.AckFlushInterval)
		select {
		case <-timer.C:
		case <-a.full:
		case <-a.stop:
		}
		timer.Stop()
		a.flush(false)
	}
}

// finish sends what is left, for up to ackFinalFlush, then releases what
// the topics hold. Hand-backs queued before are covered by the last step.
func (a *streamsAcker) finish(topics []*streamsTopic) {
	deadline := time.Now().Add(ackFinalFlush)
	for a.pending() > 0 && time.Now().Before(deadline) {
		if !a.flush(true) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := a.pending(); n > 0 {
		a.s.logger.Error("Closing with acks unsent; their entries will be delivered again", errAcksUnsent,
			watermill.LogFields{"operations": n})
	}
	var releasing sync.WaitGroup
	slots := make(chan struct{}, maxConcurrentReleases)
	for _, t := range topics {
		if !t.grouped() {
			continue
		}
		slots <- struct{}{}
		releasing.Go(func() {
			defer func() { <-slots }()
			t.releaseHeld()
		})
	}
	releasing.Wait()
}

// flush sends the operations that are due (all of them when final) and
// requeues those that failed; it reports whether everything went.
func (a *streamsAcker) flush(final bool) bool {
	now := time.Now()
	a.mu.Lock()
	var due, later []ackOp
	for _, op := range a.ops {
		if final && op.kind == opRelease {
			continue // finish releases everything held
		}
		if final || !op.notBefore.After(now) {
			due = append(due, op)
		} else {
			later = append(later, op)
		}
	}
	a.ops = later
	a.mu.Unlock()

	var failed []ackOp
	for len(due) > 0 {
		var next []ackOp
		next, failed = a.send(due, failed)
		due = next // acks of entries just dead-lettered go at once
	}
	a.mu.Lock()
	a.ops = append(a.ops, failed...)
	earliest := time.Time{}
	for _, op := range a.ops {
		if earliest.IsZero() || op.notBefore.Before(earliest) {
			earliest = op.notBefore
		}
	}
	a.mu.Unlock()
	if !earliest.IsZero() {
		a.retry.Reset(max(time.Until(earliest), 0))
	}
	return len(failed) == 0
}

// send sends one batch; it returns the operations that follow from it
// (acks of stored dead letters) and adds the failed ones to failed.
func (a *streamsAcker) send(ops []ackOp, failed []ackOp) (next, _ []ackOp) {
	var acks, deadLetters, reschedules []ackOp
	deliveries := map[*streamsTopic][]ackOp{}
	releases := map[*streamsTopic][]ackOp{}
	for _, op := range ops {
		switch op.kind {
		case opAck:
			acks = append(acks, op)
		case opDeadLetter:
			deadLetters = append(deadLetters, op)
		case opReschedule:
			reschedules = append(reschedules, op)
		case opDeliveries:
			deliveries[op.topic] = append(deliveries[op.topic], op)
		case opRelease:
			releases[op.topic] = append(releases[op.topic], op)
		}
	}
	next, failed = a.sendAcksAndDeadLetters(acks, deadLetters, failed)
	for _, op := range reschedules {
		var ack *ackOp
		if ack, failed = a.sendReschedule(op, failed); ack != nil {
			next = append(next, *ack)
		}
	}
	for t, topicOps := range deliveries {
		failed = a.sendDeliveryCounts(t, topicOps, failed)
	}
	for t, topicOps := range releases {
		failed = a.sendReleases(t, topicOps, failed)
	}
	return next, failed
}

// sendAcksAndDeadLetters sends the dead letters' copies and one XACK per
// stream in one pipeline. A dead letter is acked only once its copy is
// stored: its XACK follows in the next batch.
func (a *streamsAcker) sendAcksAndDeadLetters(acks, deadLetters, failed []ackOp) (next, _ []ackOp) {
	if len(acks) == 0 && len(deadLetters) == 0 {
		return nil, failed
	}
	cfg := a.s.config
	ctx := context.Background()
	type ackBatch struct {
		topic *streamsTopic
		ids   []string
		ops   []ackOp
	}
	var batches []*ackBatch
	byTopic := map[*streamsTopic]*ackBatch{}
	for _, op := range acks {
		b := byTopic[op.topic]
		if b == nil {
			b = &ackBatch{topic: op.topic}
			byTopic[op.topic] = b
			batches = append(batches, b)
		}
		b.ids = append(b.ids, op.id)
		b.ops = append(b.ops, op)
	}

	ackCmds := make([]*redis.IntCmd, len(batches))
	dlCmds := make([]*redis.StringCmd, len(deadLetters))
	sent := time.Now()
	cmds, pipeErr := cfg.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, op := range deadLetters {
			// Sent at most once by go-redis (see sendonce): one that Redis
			// ran but answered late is retried here, later, and may be
			// stored twice, never lost.
			args := []any{"xadd", cfg.DeadLetterTopic(op.topic.name), "maxlen", "~", deadLetterMaxLen, "*"}
			dlCmds[i] = redis.NewStringCmd(ctx, append(args, a.deadLetterFields(op)...)...)
			_ = pipe.Process(ctx, sendonce.StringCmd{StringCmd: dlCmds[i]})
		}
		for i, b := range batches {
			ackCmds[i] = pipe.XAck(ctx, b.topic.name, cfg.ConsumerGroup, b.ids...)
		}
		return nil
	})
	a.s.observeRoundTrip(time.Since(sent), pipeErr)
	stampPipelineError(cmds, pipeErr) // a dead letter or an ack that never went must not read as done

	for i, op := range deadLetters {
		if err := dlCmds[i].Err(); err != nil {
			failed = append(failed, a.deadLetterFailed(op, err))
			continue
		}
		a.s.stats.deadLettered.Add(1)
		if a.deadLetterErr[op.topic] != "" {
			delete(a.deadLetterErr, op.topic)
			op.topic.logger.Info("Dead letters are stored again", nil)
		}
		if op.topic.grouped() {
			next = append(next, ackOp{kind: opAck, topic: op.topic, id: op.id, entry: op.entry})
		} else {
			op.topic.held.release(op.id)
		}
	}
	for i, b := range batches {
		err := ackCmds[i].Err()
		switch {
		case err == nil:
		case isRedisError(err, "NOGROUP"), isRedisError(err, "WRONGTYPE"):
			// The group or the stream is gone: nothing left to ack.
			b.topic.logger.Error("Cannot ack: the consumer group or the stream is gone", err,
				watermill.LogFields{"entries": len(b.ids)})
		default:
			failed = a.retryAll(failed, b.ops, err)
			continue
		}
		b.topic.held.releaseAll(b.ops)
		b.topic.acksSent(b.ops)
	}
	return next, failed
}

// sendReschedule stores the copy of a message nacked with a delay; once it
// is stored, the entry's ack follows. Like a dead letter, a copy Redis
// stored but answered late is stored again: twice, never lost.
func (a *streamsAcker) sendReschedule(op ackOp, failed []ackOp) (*ackOp, []ackOp) {
	ctx, cancel := context.WithTimeout(context.Background(), moveTimeout)
	defer cancel()
	cfg := a.s.config
	if _, err := schedule(ctx, cfg.Client, sendonce.PolicyOf(cfg.Client), nil, op.topic.name, []scheduled{op.later}, 0); err != nil {
		if a.deadLetterErr[op.topic] != err.Error() {
			a.deadLetterErr[op.topic] = err.Error()
			op.topic.logger.Error("Cannot store a nacked message for its later delivery; the entry stays pending here and is tried again", err,
				watermill.LogFields{"entry_id": op.id})
		}
		return nil, append(failed, retryLater(op, deadLetterRetryMin, deadLetterRetryMax))
	}
	return &ackOp{kind: opAck, topic: op.topic, id: op.id, entry: op.entry}, failed
}

func (a *streamsAcker) deadLetterFields(op ackOp) []any {
	// A rescheduled copy's fields stay out: the dead letter is the
	// message's, and replayed, a new message for every group.
	fields := make([]any, 0, 2*len(op.entry.values)+12)
	for k, v := range op.entry.values {
		if !slices.Contains(copyFields, k) {
			fields = append(fields, k, v)
		}
	}
	return append(fields,
		DeadLetterFieldReason, op.reason,
		DeadLetterFieldStream, op.topic.name,
		DeadLetterFieldID, op.id,
		DeadLetterFieldGroup, a.s.config.ConsumerGroup,
		DeadLetterFieldConsumer, op.topic.consumerName(),
		DeadLetterFieldDeliveries, strconv.Itoa(op.entry.prior+op.entry.deliveries),
	)
}

// deadLetterFailed counts a dead letter Redis refused, logs it when the
// error is new for the topic, and schedules the next try. The entry stays
// pending with this consumer meanwhile, held and renewed.
func (a *streamsAcker) deadLetterFailed(op ackOp, err error) ackOp {
	a.s.stats.deadLetterFailures.Add(1)
	if a.deadLetterErr[op.topic] != err.Error() {
		a.deadLetterErr[op.topic] = err.Error()
		op.topic.logger.Error("Cannot store a dead letter; the entry stays pending here and is tried again", err,
			watermill.LogFields{"entry_id": op.id, "dead_letter_stream": a.s.config.DeadLetterTopic(op.topic.name)})
	}
	return retryLater(op, deadLetterRetryMin, deadLetterRetryMax)
}

// ackFailed logs failing acks at most once a second.
func (a *streamsAcker) ackFailed(err error, n int) {
	slotmap.Refresh(err, a.s.config.Client)
	if time.Since(a.lastAckError) < time.Second {
		return
	}
	a.lastAckError = time.Now()
	a.s.logger.Error("Cannot send acks, retrying", err, watermill.LogFields{"operations": n})
}

// retryAll logs failed operations (see ackFailed) and schedules them again.
func (a *streamsAcker) retryAll(failed, ops []ackOp, err error) []ackOp {
	a.ackFailed(err, len(ops))
	for _, op := range ops {
		failed = append(failed, retryLater(op, ackRetryMin, ackRetryMax))
	}
	return failed
}

func retryLater(op ackOp, minDelay, maxDelay time.Duration) ackOp {
	op.failures++
	op.notBefore = time.Now().Add(nackDelay(minDelay, maxDelay, op.failures))
	return op
}

// sendDeliveryCounts records the delivery counts of nacked entries with the
// touch script.
func (a *streamsAcker) sendDeliveryCounts(t *streamsTopic, ops, failed []ackOp) []ackOp {
	id := t.identity.Load()
	if id == nil {
		return failed // the name is lost, and with it these entries
	}
	args := t.scriptArgs(id, 2*len(ops))
	for _, op := range ops {
		args = append(args, op.id, op.count)
	}
	lost, err := touchScript.Run(context.Background(), a.s.config.Client, []string{t.name, id.key}, args...).StringSlice()
	if holder, taken := leaseLost(err); taken {
		t.nameLost(id, holder)
		return failed
	}
	if err != nil {
		if isRedisError(err, "NOGROUP") {
			return failed
		}
		return a.retryAll(failed, ops, err)
	}
	t.lost(lost)
	return failed
}

// sendReleases hands entries back to the group; they stay held, and
// renewed, until Redis has them.
func (a *streamsAcker) sendReleases(t *streamsTopic, ops, failed []ackOp) []ackOp {
	// Every op that is not retried is settled: released, pushed back, or
	// gone with the name or the group.
	settled := len(ops)
	defer func() { t.handBacksDone(settled) }()
	id := t.identity.Load()
	if id == nil {
		return failed // the name is lost, and with it these entries
	}
	if t.consumers.Load() > 0 {
		// A Subscribe came back before the entries went: deliver those
		// released for want of one here. The reader read nothing newer
		// meanwhile (see awaitHandBacks): they go last in order.
		ops = slices.DeleteFunc(ops, func(op ackOp) bool {
			if op.idle {
				t.inbox.push(op.entry)
			}
			return op.idle
		})
		if len(ops) == 0 {
			return failed
		}
	}
	args := t.scriptArgs(id, 2*len(ops), "0")
	for _, op := range ops {
		args = append(args, op.id, op.count)
	}
	released, err := releaseScript.Run(context.Background(), a.s.config.Client, []string{t.name, id.key}, args...).Int()
	if holder, taken := leaseLost(err); taken {
		t.nameLost(id, holder)
		return failed
	}
	if isRedisError(err, "NOGROUP") {
		// The group is gone, and its pending entries with it; the reader
		// recreates it.
		return failed
	}
	if err != nil {
		settled -= len(ops)
		return a.retryAll(failed, ops, err)
	}
	for _, op := range ops {
		t.held.release(op.id)
	}
	a.s.stats.released.Add(uint64(released))
	t.resume.Store(true) // ours to resume, before anything newer (see awaitHandBacks)
	return failed
}

// acksSent counts acks that reached Redis (or never will) and lets the
// inbox hand out what waited for them.
func (t *streamsTopic) acksSent(ops []ackOp) {
	n := int64(0)
	for _, op := range ops {
		if op.counted {
			n++
		}
	}
	if n > 0 && t.acksUnsent.Add(-n) == 0 {
		t.inbox.poke()
	}
}

// releaseHeld hands back every entry the topic still holds and gives up
// its consumer name; it runs when the subscriber closes.
func (t *streamsTopic) releaseHeld() {
	id := t.identity.Load()
	if id == nil {
		return
	}
	entries := t.held.unacked()
	var chunkList [][]*inboxEntry
	for chunk := range chunks(entries, 512) {
		chunkList = append(chunkList, chunk)
	}
	for i, chunk := range chunkList {
		dropName := "0"
		if i == len(chunkList)-1 {
			dropName = "1"
		}
		args := t.scriptArgs(id, 2*len(chunk), dropName)
		for _, e := range chunk {
			args = append(args, e.id, releaseCount(e))
		}
		released, err := releaseScript.Run(context.Background(), t.s.config.Client, []string{t.name, id.key}, args...).Int()
		if err != nil {
			_, taken := leaseLost(err)
			switch {
			case taken:
			case len(chunk) == 0:
				// Nothing to hand back: only the name stays taken, and its
				// lease lapses by itself.
				t.logger.Info("Cannot release the consumer name on Close; it lapses after ConsumerLease",
					watermill.LogFields{"err": err.Error()})
			default:
				t.logger.Error("Cannot hand entries back on Close; they stay pending with this consumer", err,
					watermill.LogFields{"entries": len(chunk)})
			}
			return
		}
		for _, e := range chunk {
			t.held.release(e.id)
		}
		t.s.stats.released.Add(uint64(released))
	}
}
