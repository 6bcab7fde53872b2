package redisbus

import (
	"errors"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// pubsubTopic is one topic of a Subscriber: its inbox, and the confirmation
// that Redis subscribed it. It implements inboxOwner.
type pubsubTopic struct {
	name   string
	s      *Subscriber
	logger watermill.LoggerAdapter
	inbox  *topicInbox

	confirmOnce sync.Once
	confirmed   chan struct{} // closed when Redis confirmed the subscription

	// stop ends the topic's inbox: at Close, or when Redis refuses the
	// topic (refusal then says why).
	stop     chan struct{}
	stopOnce sync.Once
	refusal  error

	// users counts the Subscribe calls using the topic, and idle, while
	// there are none, unsubscribes it after UnsubscribeAfter. Both are
	// guarded by the Subscriber's mu.
	users int
	idle  *time.Timer
}

func newPubSubTopic(s *Subscriber, name string) *pubsubTopic {
	t := &pubsubTopic{
		name:      name,
		s:         s,
		logger:    s.logger.With(watermill.LogFields{"topic": name}),
		confirmed: make(chan struct{}),
		stop:      make(chan struct{}),
	}
	t.inbox = newTopicInbox(t, inboxConfig{
		limit:       s.config.InboxSize,
		bytes:       max(s.config.InboxBytes, 0),
		overflow:    s.config.InboxOverflow,
		maxInFlight: 1,
	}, t.stop)
	return t
}

func (t *pubsubTopic) confirm() {
	t.confirmOnce.Do(func() { close(t.confirmed) })
}

// end stops the topic's inbox, closing its Subscribe channels; refusal,
// when set, is what Subscribe calls waiting for the topic return.
func (t *pubsubTopic) end(refusal error) {
	t.stopOnce.Do(func() {
		t.refusal = refusal
		close(t.stop)
	})
}

// receive decodes a payload read from Redis and queues it; it never loses
// one to bad data. The payload is kept as read, for a redelivery to decode
// afresh: a handler that changed its message and nacked it gets what was
// read again.
func (t *pubsubTopic) receive(raw string) {
	t.s.stats.received.Add(1)
	msg, err := t.decode(raw)
	if err != nil {
		t.s.stats.decodeErrors.Add(1)
		t.logger.Error("Cannot decode message, delivering it raw", err, nil)
	}
	// It holds its bytes twice while it waits: as read, for redeliveries,
	// and decoded (the decoder copies them).
	t.inbox.push(&inboxEntry{first: msg, raw: raw, uuid: msg.UUID, weight: 2 * len(raw)})
}

// decode decodes a payload, or wraps it raw when the Marshaler refuses it.
func (t *pubsubTopic) decode(raw string) (*message.Message, error) {
	data := []byte(raw)
	msg, err := t.s.config.Marshaler.Unmarshal(t.name, data)
	if err == nil && msg == nil {
		err = errNoMessage
	}
	if err != nil {
		return rawFallback(data, err), err
	}
	return msg, nil
}

// message decodes e again for a redelivery. Decoding again must not change
// the message's UUID, which a payload that is not an envelope gets at
// random.
func (t *pubsubTopic) message(e *inboxEntry) *message.Message {
	msg, _ := t.decode(e.raw)
	msg.UUID = e.uuid
	return msg
}

func (t *pubsubTopic) delivered(e *inboxEntry) {
	e.deliveries++
	t.s.stats.delivered.Add(1)
}

func (t *pubsubTopic) acked(*inboxEntry) { t.s.stats.acked.Add(1) }

func (t *pubsubTopic) nacked(e *inboxEntry, _ *message.Message) (time.Duration, bool) {
	t.s.stats.nacked.Add(1)
	if limit := t.s.config.MaxDeliveries; limit > 0 && e.deliveries >= limit {
		total := t.s.stats.gaveUp.Add(1)
		t.logger.Error("Message nacked on each of its deliveries; dropped", errGaveUp, watermill.LogFields{
			"message_uuid": e.uuid, "deliveries": e.deliveries, "gave_up_total": total,
		})
		return 0, false
	}
	return t.s.config.NackResendDelay, true
}

var errGaveUp = errors.New("MaxDeliveries reached")

func (t *pubsubTopic) overflowed(*inboxEntry) {
	total := t.s.stats.dropped.Add(1)
	// Log the first drop and then every 1000th, so a flood of drops is
	// visible without flooding the log.
	if total%1000 == 1 {
		t.logger.Error("Inbox full, message dropped", errInboxFull, watermill.LogFields{
			"policy":        t.s.config.InboxOverflow.String(),
			"inbox_size":    t.s.config.InboxSize,
			"dropped_total": total,
		})
	}
}

func (t *pubsubTopic) consumersChanged(int) {}

func (t *pubsubTopic) stale(*inboxEntry) {}

func (t *pubsubTopic) mayHandOut(*inboxEntry) bool { return true }

func (t *pubsubTopic) surrender([]*inboxEntry, bool) {}

func (t *pubsubTopic) closedWithInFlight([]*delivery) {}

func (t *pubsubTopic) takenBack(*inboxEntry) {}
