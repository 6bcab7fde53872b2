package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

// The two libraries, as publishers and as consumers of one group.
const (
	libRedisstream = "redisstream"
	libRedisbus    = "redisbus"
)

// migrationClaimIdle is both libraries' claim time in the test
// (redisstream's MaxIdleTime, redisbus' ClaimMinIdle): equal, as
// docs/migrating-from-watermill-redisstream.md advises for a mixed group,
// and short, so that what a stopped consumer held comes back within the
// test.
const migrationClaimIdle = time.Second

// TestMigrateLiveGroupBothWays moves one consumer group from
// watermill-redisstream to redisbus and back, the way
// docs/migrating-from-watermill-redisstream.md describes, while messages
// are published all along: redisstream consumers; redisbus consumers join
// (a mixed rollout, both libraries publishing); the redisstream consumers
// are closed mid-stream; redisstream consumers join again (a rollback);
// the redisbus consumers are closed mid-stream. Nothing may be lost: every
// message is handled at least once with its payload and metadata as
// published, by whichever library, and at the end the group has nothing
// pending and nothing was dead-lettered.
func TestMigrateLiveGroupBothWays(t *testing.T) {
	h := newMigration(t)
	const step = 60 // messages each phase waits for

	h.publishWith(libRedisstream)
	redisstreamOld := []*migrationConsumer{h.startRedisstream("rs-1"), h.startRedisstream("rs-2")}
	h.awaitHandled("redisstream consumers alone", libRedisstream, step)

	// Rollout: redisbus consumers join the group, both libraries publish.
	h.publishWith(libRedisstream, libRedisbus)
	redisbusNew := []*migrationConsumer{h.startRedisbus("bus-1"), h.startRedisbus("bus-2")}
	h.awaitEveryPath("mixed rollout")

	// The old consumers stop in the middle of a message each. Their Close
	// drops the acks of those messages, which stay pending with them until
	// another consumer claims them (after the claim time) and handles them
	// again.
	h.publishWith(libRedisbus)
	for _, c := range redisstreamOld {
		uuid, before := h.closeWhileHandling(c)
		h.await("the message a stopped redisstream consumer held, handled again", func() bool {
			return h.handled[uuid] > before
		})
	}
	h.awaitHandled("redisbus consumers alone", libRedisbus, step)
	h.awaitAllPublishedHandled("after the redisstream consumers stopped")

	// Rollback: redisstream consumers join again, both libraries publish.
	h.publishWith(libRedisstream, libRedisbus)
	redisstreamBack := []*migrationConsumer{h.startRedisstream("rs-3"), h.startRedisstream("rs-4")}
	h.awaitEveryPath("mixed rollback")

	// The redisbus consumers stop in the middle of a message each: Close
	// waits for those acks, and hands back what was read ahead, which the
	// redisstream consumers claim at once.
	h.publishWith(libRedisstream)
	heldByRedisbus := map[string]int{}
	for _, c := range redisbusNew {
		uuid, handled := h.closeWhileHandling(c)
		heldByRedisbus[uuid] = handled
	}
	h.awaitHandled("redisstream consumers alone again", libRedisstream, step)

	published := h.stopPublishing()
	h.awaitAllPublishedHandled("at the end")
	// A message handled once may still be pending: its ack dropped by a
	// stopped redisstream consumer, or handed back by a stopped redisbus
	// consumer after a claim, until a consumer claims and acks it. No event
	// here marks an ack reaching Redis, so this asks Redis.
	require.Eventually(t, func() bool { return h.pending() == 0 }, 30*time.Second, 10*time.Millisecond,
		"entries still pending in the group after every message was handled")
	for _, c := range redisstreamBack {
		c.close(t)
	}
	require.Zero(t, h.pending(), "entries pending after the last consumers closed")
	dead, err := h.admin.XLen(context.Background(), h.topic+":dead").Result()
	require.NoError(t, err)
	require.Zero(t, dead, "dead-lettered entries")

	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.handled, published)
	for uuid, handled := range heldByRedisbus {
		require.Equal(t, handled, h.handled[uuid], "times message %s was handled, which a redisbus consumer acked while closing", uuid)
	}
	duplicates := 0
	for _, n := range h.handled {
		duplicates += n - 1
	}
	t.Logf("published %d messages, handled %d times (%d again after a consumer stopped); by publisher→consumer: %v",
		published, published+duplicates, duplicates, h.paths)
}

// migration is the test's group, its publishers and its record of what was
// published and handled.
type migration struct {
	t      *testing.T
	server *pubsubtest.Server
	admin  *redis.Client
	topic  string
	group  string

	redisbusPub    *redisbus.StreamsPublisher
	redisstreamPub *redisstream.Publisher

	// window bounds the messages published and not yet handled, so that
	// publishing goes on all through the test without piling up a backlog.
	window      chan struct{}
	publishing  context.Context
	stopPublish context.CancelFunc
	publisherWG sync.WaitGroup

	mu         sync.Mutex
	publishers []string // the libraries publishing now, in turn
	sent       int
	published  map[string]*message.Message // by UUID, as published
	origin     map[string]string           // UUID → the library that published it
	handled    map[string]int              // UUID → times handled
	byConsumer map[string]int              // consumer library → messages handled
	paths      map[string]int              // "publisher→consumer" → messages handled
	changed    chan struct{}               // closed and replaced whenever a message is handled
}

func newMigration(t *testing.T) *migration {
	server := pubsubtest.Redis(t)
	h := &migration{
		t:          t,
		server:     server,
		admin:      server.Client(t),
		topic:      pubsubtest.Topic(t),
		group:      "workers",
		window:     make(chan struct{}, 32),
		published:  map[string]*message.Message{},
		origin:     map[string]string{},
		handled:    map[string]int{},
		byConsumer: map[string]int{},
		paths:      map[string]int{},
		changed:    make(chan struct{}),
	}
	h.publishing, h.stopPublish = context.WithCancel(context.Background())
	var err error
	h.redisbusPub, err = redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: server.Client(t)}, nil)
	require.NoError(t, err)
	// redisstream's Close closes the client it was given; the cleanup's
	// second Close of it only returns an error, which is ignored.
	h.redisstreamPub, err = redisstream.NewPublisher(redisstream.PublisherConfig{Client: server.Client(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		h.stopPublishing()
		require.NoError(t, h.redisbusPub.Close())
		require.NoError(t, h.redisstreamPub.Close())
	})
	return h
}

// publishWith makes the publisher take turns between libs from its next
// message on; the first call starts it.
func (h *migration) publishWith(libs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	first := h.publishers == nil
	h.publishers = libs
	if first {
		h.publisherWG.Add(1)
		go h.publishUntil(h.publishing)
	}
}

// publishUntil publishes messages, as many as the window lets it, until ctx
// is done.
func (h *migration) publishUntil(ctx context.Context) {
	defer h.publisherWG.Done()
	for {
		select {
		case h.window <- struct{}{}:
		case <-ctx.Done():
			return
		}
		h.mu.Lock()
		n := h.sent
		lib := h.publishers[n%len(h.publishers)]
		msg := migrationMessage(n, lib)
		h.sent++
		h.published[msg.UUID] = msg.Copy()
		h.origin[msg.UUID] = lib
		h.mu.Unlock()

		var err error
		if lib == libRedisbus {
			err = h.redisbusPub.Publish(h.topic, msg)
		} else {
			err = h.redisstreamPub.Publish(h.topic, msg)
		}
		if err != nil {
			h.t.Errorf("%s publish %d: %v", lib, n, err)
			return
		}
	}
}

// migrationMessage is message n as lib publishes it: metadata short and
// long (MessagePack encodes strings of 32 and of 256 bytes and more
// differently, and maps of 16 pairs and more), non-ASCII, and none at all
// for every seventh message.
func migrationMessage(n int, lib string) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"order":%d,"note":"zürich → kraków"}`, n))
	if n%7 != 0 {
		msg.Metadata.Set("n", strconv.Itoa(n))
		msg.Metadata.Set("published_by", lib)
		msg.Metadata.Set("trace", strings.Repeat("ab-ü-", 8+n%40))
	}
	if n%11 == 5 {
		for i := range 20 {
			msg.Metadata.Set(fmt.Sprintf("key-%02d", i), strconv.Itoa(i*n))
		}
	}
	return msg
}

// stopPublishing stops the publisher and returns how many messages it
// published.
func (h *migration) stopPublishing() int {
	h.stopPublish()
	h.publisherWG.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sent
}

// handle records msg as handled by a consumer of lib and checks it against
// what was published.
func (h *migration) handle(lib string, msg *message.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	want, ok := h.published[msg.UUID]
	if !ok {
		h.t.Errorf("%s consumer got a message nobody published: %s", lib, msg.UUID)
		return
	}
	if string(msg.Payload) != string(want.Payload) {
		h.t.Errorf("%s consumer: message %s payload %q, published %q", lib, msg.UUID, msg.Payload, want.Payload)
	}
	for k, v := range want.Metadata {
		if got := msg.Metadata.Get(k); got != v {
			h.t.Errorf("%s consumer: message %s metadata %s = %q, published %q", lib, msg.UUID, k, got, v)
		}
	}
	for k := range msg.Metadata {
		_, published := want.Metadata[k]
		added := lib == libRedisbus && (k == redisbus.MetadataDeliveryCount || k == redisbus.MetadataStreamID)
		if !published && !added {
			h.t.Errorf("%s consumer: message %s has metadata %s = %q that was not published", lib, msg.UUID, k, msg.Metadata[k])
		}
	}
	h.handled[msg.UUID]++
	if h.handled[msg.UUID] == 1 {
		<-h.window
	}
	h.byConsumer[lib]++
	h.paths[h.origin[msg.UUID]+"→"+lib]++
	close(h.changed)
	h.changed = make(chan struct{})
}

// await waits until cond, checked with h.mu held whenever a message was
// handled, is true; what names the wait if it fails.
func (h *migration) await(what string, cond func() bool) {
	h.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		ok, ch := cond(), h.changed
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			h.mu.Lock()
			defer h.mu.Unlock()
			h.t.Fatalf("%s: still waiting after 30s; published %d, handled %d distinct, by consumer %v, by path %v",
				what, h.sent, len(h.handled), h.byConsumer, h.paths)
		}
	}
}

// awaitHandled waits until consumers of lib have handled n more messages.
func (h *migration) awaitHandled(what, lib string, n int) {
	h.t.Helper()
	h.mu.Lock()
	target := h.byConsumer[lib] + n
	h.mu.Unlock()
	h.await(what, func() bool { return h.byConsumer[lib] >= target })
}

// awaitEveryPath waits until messages have gone from each library's
// publisher to each library's consumers since now: the mixed group works
// in every direction.
func (h *migration) awaitEveryPath(what string) {
	h.t.Helper()
	const n = 10
	start := map[string]int{}
	h.mu.Lock()
	for k, v := range h.paths {
		start[k] = v
	}
	h.mu.Unlock()
	h.await(what, func() bool {
		for _, from := range []string{libRedisstream, libRedisbus} {
			for _, to := range []string{libRedisstream, libRedisbus} {
				if h.paths[from+"→"+to] < start[from+"→"+to]+n {
					return false
				}
			}
		}
		return true
	})
}

// awaitAllPublishedHandled waits until every message published so far was
// handled.
func (h *migration) awaitAllPublishedHandled(what string) {
	h.t.Helper()
	h.mu.Lock()
	var want []string
	for id := range h.published {
		want = append(want, id)
	}
	h.mu.Unlock()
	h.await(what, func() bool {
		for _, id := range want {
			if h.handled[id] == 0 {
				return false
			}
		}
		return true
	})
}

// pending is how many entries the group has not acked.
func (h *migration) pending() int64 {
	p, err := h.admin.XPending(context.Background(), h.topic, h.group).Result()
	require.NoError(h.t, err)
	return p.Count
}

// migrationConsumer is one consumer of the group, of either library, its
// messages handled (and acked) by a goroutine of its own.
type migrationConsumer struct {
	lib      string
	sub      message.Subscriber
	holdNext chan migrationHold // the handler holds its next message as told
	handled  chan struct{}      // closed when the Subscribe channel was closed
	closed   bool
}

// migrationHold makes a handler hold a message: it closes held with the
// message's UUID recorded in uuid, and acks it once release is closed.
type migrationHold struct {
	uuid    *string
	held    chan struct{}
	release chan struct{}
}

func (h *migration) consume(lib string, sub message.Subscriber) *migrationConsumer {
	msgs, err := sub.Subscribe(context.Background(), h.topic)
	require.NoError(h.t, err)
	c := &migrationConsumer{lib: lib, sub: sub, holdNext: make(chan migrationHold, 1), handled: make(chan struct{})}
	go func() {
		defer close(c.handled)
		for msg := range msgs {
			h.handle(lib, msg)
			select {
			case hold := <-c.holdNext:
				*hold.uuid = msg.UUID
				close(hold.held)
				<-hold.release
			default:
			}
			msg.Ack()
		}
	}()
	h.t.Cleanup(func() { c.close(h.t) })
	return c
}

// close stops the consumer the way a process does on SIGTERM: Close, while
// its handler goes on acking what it has.
func (c *migrationConsumer) close(t *testing.T) {
	if c.closed {
		return
	}
	c.closed = true
	require.NoError(t, c.sub.Close())
	<-c.handled
}

// closeWhileHandling closes the consumer while its handler is in the middle
// of a message, and returns that message's UUID and how many times it had
// been handled then. A redisbus subscriber's Close waits for the handler's
// ack; a redisstream subscriber's Close does not (the handler acks after it
// returned, and the ack is never sent).
func (h *migration) closeWhileHandling(c *migrationConsumer) (uuid string, handled int) {
	h.t.Helper()
	hold := migrationHold{uuid: &uuid, held: make(chan struct{}), release: make(chan struct{})}
	c.holdNext <- hold
	select {
	case <-hold.held:
	case <-time.After(30 * time.Second):
		h.t.Fatalf("%s consumer got no message to hold within 30s", c.lib)
	}
	c.closed = true
	closed := make(chan error, 1)
	go func() { closed <- c.sub.Close() }()
	if c.lib == libRedisstream {
		require.NoError(h.t, <-closed)
		close(hold.release)
	} else {
		close(hold.release)
		require.NoError(h.t, <-closed)
	}
	<-c.handled
	h.mu.Lock()
	defer h.mu.Unlock()
	return uuid, h.handled[uuid]
}

// startRedisstream starts a watermill-redisstream consumer of the group.
// The name is explicit only so that a failure names it; redisstream's own
// default is a random name per subscriber. ClaimInterval is short so that
// what stopped redisbus consumers handed back is taken at once, as
// redisbus consumers do.
func (h *migration) startRedisstream(name string) *migrationConsumer {
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        h.server.Client(h.t), // closed by sub.Close
		ConsumerGroup: h.group,
		Consumer:      name,
		MaxIdleTime:   migrationClaimIdle,
		ClaimInterval: 50 * time.Millisecond,
	}, nil)
	require.NoError(h.t, err)
	return h.consume(libRedisstream, sub)
}

// startRedisbus starts a redisbus consumer of the group.
func (h *migration) startRedisbus(name string) *migrationConsumer {
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client:        h.server.Client(h.t),
		ConsumerGroup: h.group,
		Consumer:      name,
		ClaimMinIdle:  migrationClaimIdle,
	}, nil)
	require.NoError(h.t, err)
	return h.consume(libRedisbus, sub)
}
