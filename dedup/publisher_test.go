package dedup_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

type nopPublisher struct{}

func (nopPublisher) Publish(string, ...*message.Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }

// storingPublisher is a publisher of any kind: it stores what it is given,
// per topic, and can be told how its next Publish goes wrong.
type storingPublisher struct {
	mu     sync.Mutex
	stored map[string][]string // topic → UUIDs
	// next, when set, decides the next Publish: store reports whether the
	// messages are stored, err is what Publish returns.
	next *outcome
	// entered, when set, receives every Publish call and holds it until
	// proceed gets a value.
	entered chan struct{}
	proceed chan struct{}
	// delay, when set, makes every Publish take that long.
	delay time.Duration
}

type outcome struct {
	store bool
	err   error
}

var errLostReply = errors.New("i/o timeout")

func newStoringPublisher() *storingPublisher {
	return &storingPublisher{stored: map[string][]string{}}
}

func (p *storingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.entered != nil {
		p.entered <- struct{}{}
		<-p.proceed
	}
	time.Sleep(p.delay)
	p.mu.Lock()
	defer p.mu.Unlock()
	next := outcome{store: true}
	if p.next != nil {
		next, p.next = *p.next, nil
	}
	if next.store {
		for _, msg := range msgs {
			p.stored[topic] = append(p.stored[topic], msg.UUID)
		}
	}
	return next.err
}

func (p *storingPublisher) Close() error { return nil }

func (p *storingPublisher) copies(topic, uuid string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, u := range p.stored[topic] {
		if u == uuid {
			n++
		}
	}
	return n
}

func newGuard(t *testing.T, inner message.Publisher, config dedup.Config) *dedup.Publisher {
	t.Helper()
	pub, err := dedup.NewPublisher(inner, config, nil)
	require.NoError(t, err)
	return pub
}

// Over any publisher: a retry of a Publish that succeeded, from this
// process or another, is not published again; the same UUID on another
// topic is.
func TestPublisherPublishesARetryOnce(t *testing.T) {
	inner := newStoringPublisher()
	config := testConfig(t, pubsubtest.NewClient(t))
	one := newGuard(t, inner, config)
	config.Client = pubsubtest.NewClient(t)
	other := newGuard(t, inner, config)
	msg, second := newMessage("order 1"), newMessage("order 2")

	require.NoError(t, one.Publish("orders", msg))
	require.NoError(t, other.Publish("orders", msg.Copy(), second, second.Copy()))
	require.NoError(t, one.Publish("orders", second.Copy()))
	require.NoError(t, one.Publish("audit", msg.Copy()))

	assert.Equal(t, 1, inner.copies("orders", msg.UUID))
	assert.Equal(t, 1, inner.copies("orders", second.UUID), "a repeat within a call too")
	assert.Equal(t, 1, inner.copies("audit", msg.UUID))
	assert.Equal(t, dedup.PublisherStats{Published: 2, Duplicates: 1}, one.Stats())
	assert.Equal(t, dedup.PublisherStats{Published: 1, Duplicates: 2}, other.Stats())
}

// A Publish that failed does not keep its retry out: a guard that marked
// first (as Watermill's Deduplicator.PublisherDecorator does) would drop
// the retry, and the message would never be published.
func TestPublisherPublishesTheRetryOfAFailedPublish(t *testing.T) {
	inner := newStoringPublisher()
	pub := newGuard(t, inner, testConfig(t, pubsubtest.NewClient(t)))
	msg := newMessage("order")

	inner.next = &outcome{store: false, err: errors.New("broker unavailable")}
	require.Error(t, pub.Publish("orders", msg))
	require.NoError(t, pub.Publish("orders", msg.Copy()))
	assert.Equal(t, 1, inner.copies("orders", msg.UUID))
}

// What the generic guard cannot do: a Publish that stored the message and
// then failed (its reply lost) is published again by its retry. Over a
// StreamsPublisher it is not (TestPublisherOverStreamsStoresARetryOnce).
func TestPublisherOverAnyPublisherRepeatsAPublishWhoseReplyWasLost(t *testing.T) {
	inner := newStoringPublisher()
	pub := newGuard(t, inner, testConfig(t, pubsubtest.NewClient(t)))
	msg := newMessage("order")

	inner.next = &outcome{store: true, err: errLostReply}
	require.ErrorIs(t, pub.Publish("orders", msg), errLostReply)
	require.NoError(t, pub.Publish("orders", msg.Copy()))
	assert.Equal(t, 2, inner.copies("orders", msg.UUID), "at least once: twice, never lost")
}

// A Publish of a message that another Publish is publishing right now
// fails with ErrInProgress and publishes nothing, not even its other
// messages; once the first is done, the message is a duplicate.
func TestPublisherRefusesAMessageAnotherPublishHolds(t *testing.T) {
	inner := newStoringPublisher()
	config := testConfig(t, pubsubtest.NewClient(t))
	config.Lease = 30 * time.Millisecond // renewed while the first Publish is held up
	pub := newGuard(t, inner, config)
	msg, other := newMessage("order"), newMessage("other")

	inner.entered, inner.proceed = make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- pub.Publish("orders", msg) }()
	<-inner.entered
	time.Sleep(4 * config.Lease) // longer than the lease: the renewals keep the claim
	err := pub.Publish("orders", other, msg.Copy())
	require.ErrorIs(t, err, dedup.ErrInProgress)
	inner.entered = nil
	inner.proceed <- struct{}{}
	require.NoError(t, <-first)

	require.NoError(t, pub.Publish("orders", other.Copy(), msg.Copy()))
	assert.Equal(t, 1, inner.copies("orders", msg.UUID))
	assert.Equal(t, 1, inner.copies("orders", other.UUID), "published by the call after the refused one")
	assert.Equal(t, dedup.PublisherStats{Published: 2, Duplicates: 1, InProgress: 1}, pub.Stats())
}

// Over a StreamsPublisher the check and the XADD are one script: a retry
// after a lost reply (the entry was stored, Publish failed) stores nothing.
func TestPublisherOverStreamsStoresARetryOnce(t *testing.T) {
	proxy, client := clientBehindProxy(t, 0)
	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	pub := newGuard(t, streams, testConfig(t, client))
	defer pub.Close()
	topic := pubsubtest.Topic(t)
	require.NoError(t, pub.Publish(topic+"-warm-up", newMessage("opens the connection that turns slow")))
	proxy.DelayOpenConnections(700 * time.Millisecond)

	msg := newMessage("order")
	require.Error(t, pub.Publish(topic, msg), "the reply was lost")
	require.NoError(t, pub.Publish(topic, msg.Copy()))
	assert.Equal(t, int64(1), pubsubtest.NewClient(t).XLen(t.Context(), topic).Val())
	assert.Equal(t, dedup.PublisherStats{Published: 1, Duplicates: 1}, pub.Stats())
}

// PublisherDecorator is NewPublisher for Watermill's decorator chains.
func TestPublisherDecorator(t *testing.T) {
	inner := newStoringPublisher()
	decorated, err := dedup.PublisherDecorator(testConfig(t, pubsubtest.NewClient(t)), nil)(inner)
	require.NoError(t, err)
	msg := newMessage("x")
	require.NoError(t, decorated.Publish("t", msg))
	require.NoError(t, decorated.Publish("t", msg.Copy()))
	assert.Equal(t, 1, inner.copies("t", msg.UUID))

	_, err = dedup.PublisherDecorator(testConfig(t, pubsubtest.NewClient(t)), nil)(nil)
	require.Error(t, err)
}

// A delayed message through the Publisher over a StreamsPublisher is
// scheduled once, and shares its mark with the same message without a
// delay, in either order: one copy of a UUID per topic and Window.
func TestPublisherWithADelayedMessage(t *testing.T) {
	client := pubsubtest.NewClient(t)
	config := testConfig(t, client)
	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = streams.Close() })
	pub, err := dedup.NewPublisher(streams, config, nil)
	require.NoError(t, err)
	topic := pubsubtest.Topic(t)
	later := func(msg *message.Message) *message.Message {
		c := msg.Copy()
		delay.Message(c, delay.For(time.Hour))
		return c
	}
	first, second := newMessage("delayed, then plain"), newMessage("plain, then delayed")
	require.NoError(t, pub.Publish(topic, later(first)))
	require.NoError(t, pub.Publish(topic, later(first)), "a retry")
	require.NoError(t, pub.Publish(topic, first.Copy()), "without its delay")
	require.NoError(t, pub.Publish(topic, second.Copy()))
	require.NoError(t, pub.Publish(topic, later(second)))

	assert.EqualValues(t, 1, client.ZCard(t.Context(), redisbus.DelayedKey(topic)).Val(), "the first, for later")
	assert.EqualValues(t, 1, client.XLen(t.Context(), topic).Val(), "the second, now")
	assert.Equal(t, dedup.PublisherStats{Published: 2, Duplicates: 3}, pub.Stats())
}
