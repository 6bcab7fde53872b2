package redisbus

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
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
	DeadLetterFieldDeliveries = "redisbus_deliveries"    // how often it had been delivered
)

// deadLetterMaxLen bounds dead-letter streams (MAXLEN ~).
const deadLetterMaxLen = 1_000_000

// ackBatchSize is how many operations fill a batch, which is then sent
// without waiting for AckFlushInterval.
const ackBatchSize = 512

// ackFinalFlush bounds how long Close tries to send what is left.
const ackFinalFlush = 5 * time.Second

type ackKind int

const (
	opAck        ackKind = iota // XACK
	opDeliveries                // record a delivery count after a Nack
	opDeadLetter                // XADD to the dead-letter stream, then XACK
)

// ackOp is one write the subscriber owes Redis for an entry.
type ackOp struct {
	kind       ackKind
	topic      *streamsTopic
	id         string
	deliveries int
	fields     []any  // opDeadLetter: the entry's fields
	reason     string // opDeadLetter
}

// streamsAcker sends a subscriber's acks, delivery counts and dead letters
// in batches: whatever accumulated within AckFlushInterval of the first one
// goes in one pipeline. A failed batch is retried with backoff; what is
// still unsent when Close gives up stays pending in Redis and is delivered
// again, which at-least-once allows.
type streamsAcker struct {
	s *StreamsSubscriber

	mu   sync.Mutex
	ops  []ackOp
	wake chan struct{} // capacity 1: the first op of a batch arrived
	full chan struct{} // capacity 1: a batch is full
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newStreamsAcker(s *StreamsSubscriber) *streamsAcker {
	a := &streamsAcker{
		s:    s,
		wake: make(chan struct{}, 1),
		full: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go a.run()
	return a
}

func (a *streamsAcker) ack(t *streamsTopic, id string) {
	a.add(ackOp{kind: opAck, topic: t, id: id})
}

func (a *streamsAcker) recordDeliveries(t *streamsTopic, id string, deliveries int) {
	a.add(ackOp{kind: opDeliveries, topic: t, id: id, deliveries: deliveries})
}

func (a *streamsAcker) deadLetter(t *streamsTopic, id string, fields []any, deliveries int, reason string) {
	a.add(ackOp{kind: opDeadLetter, topic: t, id: id, fields: fields, deliveries: deliveries, reason: reason})
}

func (a *streamsAcker) add(op ackOp) {
	a.mu.Lock()
	a.ops = append(a.ops, op)
	n := len(a.ops)
	a.mu.Unlock()
	if n == 1 {
		signal(a.wake)
	}
	if n >= ackBatchSize {
		signal(a.full)
	}
}

// close sends what is left and stops the acker.
func (a *streamsAcker) close() {
	a.once.Do(func() { close(a.stop) })
	<-a.done
}

func (a *streamsAcker) wait() { <-a.done }

func (a *streamsAcker) stopping() bool {
	select {
	case <-a.stop:
		return true
	default:
		return false
	}
}

func (a *streamsAcker) run() {
	defer close(a.done)
	backoff := minReconnectBackoff
	var deadline time.Time // for the last flushes, once stopping
	for {
		a.gather()
		if a.stopping() && deadline.IsZero() {
			deadline = time.Now().Add(ackFinalFlush)
		}
		if a.flush() {
			backoff = minReconnectBackoff
			if a.stopping() && a.pending() == 0 {
				return
			}
			continue
		}
		if a.stopping() && time.Now().After(deadline) {
			a.s.logger.Error("Closing with acks unsent; their entries will be delivered again", nil,
				watermill.LogFields{"operations": a.pending()})
			return
		}
		time.Sleep(backoff) // Redis is unreachable: retry, stopping or not
		backoff = min(2*backoff, maxReconnectBackoff)
		signal(a.wake)
	}
}

// gather waits for the first operation of a batch, then AckFlushInterval
// for more to join unless the batch fills up first; stopping cuts both
// waits short.
func (a *streamsAcker) gather() {
	select {
	case <-a.wake:
	case <-a.stop:
		return
	}
	timer := time.NewTimer(a.s.config.AckFlushInterval)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-a.full:
	case <-a.stop:
	}
}

func (a *streamsAcker) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ops)
}

// flush sends every queued operation; it reports false, and keeps the
// failed ones queued, when Redis could not be reached.
func (a *streamsAcker) flush() bool {
	a.mu.Lock()
	ops := a.ops
	a.ops = nil
	a.mu.Unlock()
	if len(ops) == 0 {
		return true
	}

	var failed []ackOp
	var lastErr error
	if rest, err := a.sendAcksAndDeadLetters(ops); err != nil {
		failed, lastErr = append(failed, rest...), err
	}
	if rest, err := a.sendDeliveryCounts(ops); err != nil {
		failed, lastErr = append(failed, rest...), err
	}
	if len(failed) == 0 {
		return true
	}
	a.s.logger.Error("Cannot send acks, retrying", lastErr, watermill.LogFields{"operations": len(failed)})
	a.mu.Lock()
	a.ops = append(failed, a.ops...)
	a.mu.Unlock()
	return false
}

// sendAcksAndDeadLetters sends one XACK per stream and the dead letters, in
// one pipeline.
func (a *streamsAcker) sendAcksAndDeadLetters(ops []ackOp) ([]ackOp, error) {
	cfg := a.s.config
	ctx := context.Background()
	type ackBatch struct {
		topic *streamsTopic
		ids   []string
		ops   []ackOp
	}
	var batches []*ackBatch
	byTopic := map[*streamsTopic]*ackBatch{}
	var deadLetters []ackOp
	for _, op := range ops {
		switch op.kind {
		case opDeadLetter:
			deadLetters = append(deadLetters, op)
			if !op.topic.grouped() {
				continue
			}
			fallthrough // a dead letter leaves the group's pending list too
		case opAck:
			b := byTopic[op.topic]
			if b == nil {
				b = &ackBatch{topic: op.topic}
				byTopic[op.topic] = b
				batches = append(batches, b)
			}
			b.ids = append(b.ids, op.id)
			if op.kind == opAck {
				b.ops = append(b.ops, op)
			}
		}
	}
	if len(batches) == 0 && len(deadLetters) == 0 {
		return nil, nil
	}

	ackCmds := make([]*redis.IntCmd, len(batches))
	dlCmds := make([]*redis.StringCmd, len(deadLetters))
	_, err := cfg.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		// Dead letters first: an entry leaves the group only once its copy
		// is stored.
		for i, op := range deadLetters {
			fields := append(op.fields[:len(op.fields):len(op.fields)],
				DeadLetterFieldReason, op.reason,
				DeadLetterFieldStream, op.topic.name,
				DeadLetterFieldID, op.id,
				DeadLetterFieldGroup, cfg.ConsumerGroup,
				DeadLetterFieldConsumer, cfg.Consumer,
				DeadLetterFieldDeliveries, strconv.Itoa(op.deliveries),
			)
			dlCmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{
				Stream: cfg.DeadLetterTopic(op.topic.name), Values: fields,
				MaxLen: deadLetterMaxLen, Approx: true,
			})
		}
		for i, b := range batches {
			ackCmds[i] = pipe.XAck(ctx, b.topic.name, cfg.ConsumerGroup, b.ids...)
		}
		return nil
	})
	if err == nil {
		return nil, nil
	}
	// Retry what failed. A dead letter whose XADD failed is retried whole;
	// one whose XADD succeeded but XACK failed is acked on the retry.
	var failed []ackOp
	for i, op := range deadLetters {
		if dlCmds[i].Err() != nil {
			failed = append(failed, op)
		} else if op.topic.grouped() {
			failed = append(failed, ackOp{kind: opAck, topic: op.topic, id: op.id})
		}
	}
	for i, b := range batches {
		if ackCmds[i].Err() != nil {
			failed = append(failed, b.ops...)
		}
	}
	return failed, err
}

// sendDeliveryCounts records the delivery counts of nacked entries with the
// touch script, one call per stream.
func (a *streamsAcker) sendDeliveryCounts(ops []ackOp) ([]ackOp, error) {
	byTopic := map[*streamsTopic][]ackOp{}
	var topics []*streamsTopic
	for _, op := range ops {
		if op.kind != opDeliveries {
			continue
		}
		if byTopic[op.topic] == nil {
			topics = append(topics, op.topic)
		}
		byTopic[op.topic] = append(byTopic[op.topic], op)
	}
	var failed []ackOp
	var lastErr error
	for _, t := range topics {
		topicOps := byTopic[t]
		args := make([]any, 0, 2+2*len(topicOps))
		args = append(args, a.s.config.ConsumerGroup, a.s.config.Consumer)
		for _, op := range topicOps {
			args = append(args, op.id, op.deliveries)
		}
		lost, err := touchScript.Run(context.Background(), a.s.config.Client, []string{t.name}, args...).StringSlice()
		if err != nil {
			failed, lastErr = append(failed, topicOps...), err
			continue
		}
		t.lost(lost)
	}
	return failed, lastErr
}
