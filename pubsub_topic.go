package redisbus

import (
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
}

func newPubSubTopic(s *Subscriber, name string) *pubsubTopic {
	t := &pubsubTopic{
		name:      name,
		s:         s,
		logger:    s.logger.With(watermill.LogFields{"topic": name}),
		confirmed: make(chan struct{}),
	}
	t.inbox = newTopicInbox(t, inboxConfig{
		limit:       s.config.InboxSize,
		overflow:    s.config.InboxOverflow,
		maxInFlight: 1,
	}, s.closing)
	return t
}

func (t *pubsubTopic) confirm() {
	t.confirmOnce.Do(func() { close(t.confirmed) })
}

// receive queues a payload read from Redis. It is decoded when it is
// offered, afresh for every delivery, so a handler that changes its message
// and nacks it gets what was read again.
func (t *pubsubTopic) receive(raw string) {
	t.s.stats.received.Add(1)
	t.inbox.push(&inboxEntry{raw: raw})
}

// message decodes e for one delivery; it never loses one to bad data.
// Decoding again must not change the message's UUID, which a payload that
// is not an envelope gets at random.
func (t *pubsubTopic) message(e *inboxEntry) *message.Message {
	data := []byte(e.raw)
	msg, err := t.s.config.Marshaler.Unmarshal(t.name, data)
	if err == nil && msg == nil {
		err = errNoMessage
	}
	if err != nil {
		if e.uuid == "" {
			t.s.stats.decodeErrors.Add(1)
			t.logger.Error("Cannot decode message, delivering it raw", err, nil)
		}
		msg = rawFallback(data, err)
	}
	if e.uuid == "" {
		e.uuid = msg.UUID
	} else {
		msg.UUID = e.uuid
	}
	return msg
}

func (t *pubsubTopic) delivered(*inboxEntry) { t.s.stats.delivered.Add(1) }

func (t *pubsubTopic) acked(*inboxEntry) { t.s.stats.acked.Add(1) }

func (t *pubsubTopic) nacked(*inboxEntry) (time.Duration, bool) {
	t.s.stats.nacked.Add(1)
	return t.s.config.NackResendDelay, true
}

func (t *pubsubTopic) overflowed(*inboxEntry) {
	total := t.s.stats.dropped.Add(1)
	// Log the first drop and then every 1000th, so a flood of drops is
	// visible without flooding the log.
	if total%1000 == 1 {
		t.logger.Error("Inbox full, message dropped", nil, watermill.LogFields{
			"policy":        t.s.config.InboxOverflow.String(),
			"inbox_size":    t.s.config.InboxSize,
			"dropped_total": total,
		})
	}
}

func (t *pubsubTopic) consumersChanged(int) {}

func (t *pubsubTopic) stale(*inboxEntry) {}

func (t *pubsubTopic) mayHandOut(*inboxEntry) bool { return true }

func (t *pubsubTopic) surrender([]*inboxEntry) {}

func (t *pubsubTopic) closedWithInFlight([]*delivery) {}
