package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// env is what every run gets: the Redis, and a counter of the round trips
// the contenders' clients make.
type env struct {
	opt   *redis.Options
	admin *redis.Client
	trips *roundTrips
	// private is true when the bench started its own redis-server.
	private bool
	// replicated is the env of the contenders that need a primary with a
	// replica (WaitReplicas); nil when none could be had.
	replicated *env
}

// of returns the env contender c runs in.
func (e *env) of(c *contender) *env {
	if c.replicated && e.replicated != nil {
		return e.replicated
	}
	return e
}

// client returns a new client whose round trips are counted.
func (e *env) client(noRetry bool) *redis.Client {
	return e.clientWith(func(opt *redis.Options) {
		if noRetry {
			opt.MaxRetries = -1
		}
	})
}

// clientWith is client with options of the caller's.
func (e *env) clientWith(tune func(*redis.Options)) *redis.Client {
	opt := *e.opt
	tune(&opt)
	c := redis.NewClient(&opt)
	c.AddHook(e.trips)
	return c
}

// contender is one thing measured: a Watermill Pub/Sub, or raw go-redis.
type contender struct {
	name string
	// family groups contenders that do the same job: "pubsub" (best-effort
	// broadcast), "streams" (durable, consumer groups) or "inproc".
	family string
	// watermill builds a publisher and subscriber for n messages; the
	// closer releases everything. Nil for raw contenders.
	watermill func(e *env, n int) (message.Publisher, message.Subscriber, func())
	// raw runs the workloads with go-redis directly. Nil for Watermill
	// contenders.
	raw rawWorkloads
	// stream is true when messages live in a stream and group whose pending
	// list must be empty at the end.
	stream bool
	// peer marks a library compared against: its correctness is reported,
	// but does not fail the run.
	peer bool
	// reference marks a ceiling for workload 1's calling pattern, run in
	// that workload only.
	reference bool
	// shares runs workload 6: consumers of one group sharing a backlog.
	shares bool
	// replicated runs on a primary with a replica (env.replicated).
	replicated bool
	// setup is the contender's exact configuration and why is the reason
	// for it, as the report states them.
	setup, why string
}

const benchGroup = "bench"

func contenders() []*contender {
	return []*contender{
		{
			name: cPubSub, family: "pubsub",
			setup: "`NewPublisher` and `NewSubscriber` on one go-redis client with default options; every setting its default except the inbox's bounds: `InboxSize` messages + 1024, `InboxBytes` none.",
			why:   "Defaults, as a user gets them, but for the inbox, which must hold a whole run in workload 1, where everything is published before the Router starts: its defaults (10,000 messages, 64 MiB) would drop the oldest.",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				client := e.client(false)
				pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
				must(err)
				sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, InboxSize: n + 1024, InboxBytes: -1}, nil)
				must(err)
				return pub, sub, closer(pub, sub, client)
			},
		},
		{
			name: cPubSubAsync, family: "pubsub",
			setup: "As redisbus Pub/Sub, with `PublisherConfig.Async`: `Publish` returns once the message is queued. The clock runs until `Flush` returns, so Redis has every message.",
			why:   "Not the default: it shows what a publish that does not wait for Redis gains, at the price of the error `Publish` would return.",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				client := e.client(false)
				pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Async: true}, nil)
				must(err)
				sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, InboxSize: n + 1024, InboxBytes: -1}, nil)
				must(err)
				return pub, sub, closer(pub, sub, client)
			},
		},
		{
			name: cOrdered, family: "streams", stream: true, shares: true,
			setup:     "`NewStreamsPublisher` and `NewStreamsSubscriber` with a consumer group, on one go-redis client with default options; defaults (`MaxInFlight` 1: in order) except `BlockTime` 100 ms, and a `ReadClient` of the bench's with retries off, as its documentation advises.",
			why:       "Defaults, as a user gets them. The bench passes its own `ReadClient` so that it counts that connection's round trips too; with a caller's `ReadClient`, `Close` waits for a read to end, which `BlockTime` 100 ms (watermill-redisstream's default) keeps short.",
			watermill: redisbusStreams(1, 0),
		},
		{
			name: cConcurrent, family: "streams", stream: true,
			setup:     "As redisbus Streams (ordered), with `MaxInFlight` 64: up to 64 unacked messages per subscription, which the Router handles concurrently.",
			why:       "The setting for throughput when order does not matter.",
			watermill: redisbusStreams(64, 0),
		},
		{
			name: cReplicaNoWait, family: "streams", stream: true, replicated: true,
			setup:     "As redisbus Streams (ordered), on a Redis primary with one replica in sync (see Where the numbers come from); `WaitReplicas` 0, the default. Redis CPU and commands are the primary's.",
			why:       "The baseline of the WaitReplicas contender: the same primary, replica and settings without waiting, so that the ratio between the two is the cost of waiting alone, not of replication, which both pay.",
			watermill: redisbusStreams(1, 0),
		},
		{
			name: cWaitReplicas, family: "streams", stream: true, replicated: true,
			setup:     "As redisbus Streams, WaitReplicas: 0 (replica), with `StreamsPublisherConfig.WaitReplicas` 1 (`WaitTimeout` its default, 1 s): `Publish` returns once `WAIT 1` confirms the replica has every entry of the call; one `WAIT` ends each coalesced pipeline.",
			why:       "What acknowledged messages surviving a failover costs: Redis replicates asynchronously, and without it a primary that fails before its replica got an entry loses what it acknowledged.",
			watermill: redisbusStreams(1, 1),
		},
		{
			name: cPeer, family: "streams", stream: true, peer: true, shares: true,
			setup: "`NewPublisher` and `NewSubscriber` with a consumer group and `DefaultMarshallerUnmarshaller`, each on its own go-redis client with default options (a pool of 10 connections per GOMAXPROCS); every other setting its default.",
			why:   "What a user gets, and how watermill-benchmark configures it.",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				subClient, pubClient := e.client(false), e.client(false)
				sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
					Client: subClient, Unmarshaller: redisstream.DefaultMarshallerUnmarshaller{}, ConsumerGroup: benchGroup,
				}, watermill.NopLogger{})
				must(err)
				pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
					Client: pubClient, Marshaller: redisstream.DefaultMarshallerUnmarshaller{},
				}, watermill.NopLogger{})
				must(err)
				// Its Close closes the clients it was given.
				return pub, sub, closer(pub, sub)
			},
		},
		{
			name: cPeerTuned, family: "streams", stream: true, peer: true,
			setup: fmt.Sprintf("%d consumers of the group, each its own `NewSubscriber` and client, merged into the Router's one subscription, so %d messages are in flight; "+
				"the publisher's client has a pool of %d connections, one per publishing goroutine; `DisableIndefiniteInitialBlock`, so that `Close` leaves no read behind; every other setting its default.",
				tunedConsumers, tunedConsumers, tunedPoolSize),
			why: "Its subscriber reads one entry per `XREADGROUP` and waits for that entry's ack before reading the next, so concurrency takes more consumers, as watermill-benchmark runs AMQP and NATS with several subscribers; " +
				"in trials on this machine 4 and 8 did equally well and 16 or 32 worse. The pool made no measurable difference here; it is there so that no publisher waits for a connection. " +
				"`BlockTime`, `ClaimInterval`, `MaxIdleTime`, `CheckConsumersInterval` and `NackResendSleep` act only when the stream is idle, a consumer died or a handler nacked, none of which happens here.",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				pubClient := e.clientWith(func(opt *redis.Options) { opt.PoolSize = tunedPoolSize })
				pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
					Client: pubClient, Marshaller: redisstream.DefaultMarshallerUnmarshaller{},
				}, watermill.NopLogger{})
				must(err)
				var subs fanIn
				for range tunedConsumers {
					sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
						Client: e.client(false), Unmarshaller: redisstream.DefaultMarshallerUnmarshaller{},
						ConsumerGroup: benchGroup,
						// Its first read otherwise blocks with no timeout,
						// which leaves a goroutine behind on Close.
						DisableIndefiniteInitialBlock: true,
					}, watermill.NopLogger{})
					must(err)
					subs = append(subs, sub)
				}
				return pub, subs, closer(pub, subs)
			},
		},
		{
			name: cGoChannel, family: "inproc",
			setup: "`gochannel.Config{Persistent: true}`; `OutputChannelBuffer` 0 (its default). In-process: no Redis, no network.",
			why:   "Workload 1 publishes before it subscribes, and a GoChannel that is not persistent drops messages no subscriber is there for; watermill-benchmark configures it the same way. A buffer of 1024 consumed more slowly in a trial here, so the default stays. It is the in-process reference for a Router fed by a Watermill Pub/Sub.",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
				return pubsub, pubsub, closer(pubsub)
			},
		},
		{
			name: cRawPublish, family: "pubsub", raw: rawPubSub{},
			setup: "One go-redis client: `PUBLISH` in pipelines of 100 from 8 goroutines; one `SUBSCRIBE` connection whose loop records each message.",
			why:   "No library: the most this Redis and this machine do with Pub/Sub.",
		},
		{
			name: cRawStreams, family: "streams", raw: rawStreams{}, stream: true,
			setup: "`XADD` of one field in pipelines of 100 from 8 goroutines; one consumer reading `XREADGROUP COUNT 1000` and acking each batch with one `XACK`.",
			why:   "No library: the most this Redis and this machine do with a consumer group.",
		},
		{
			name: cRawCoalescedPublish, family: "pubsub", reference: true, raw: rawPubSub{coalesced: true},
			setup: "64 goroutines, one `PUBLISH` per call, each waiting for its reply; the calls are coalesced into shared pipelines by the simplest code that does it as redisbus does (two pipelines in flight, one yield before sending).",
			why:   "No library: the ceiling of workload 1's calling pattern (run in workload 1 only).",
		},
		{
			name: cRawCoalescedXAdd, family: "streams", stream: true, reference: true, raw: rawStreams{coalesced: true},
			setup: "As the coalesced `PUBLISH`, with `XADD`; read like raw `XADD`/`XREADGROUP`.",
			why:   "No library: the ceiling of workload 1's calling pattern for Streams (workload 1 only).",
		},
	}
}

// redisbusStreams is redisbus Streams with MaxInFlight and WaitReplicas
// as given, every other setting as the contenders' setup says.
func redisbusStreams(maxInFlight, waitReplicas int) func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
	return func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
		client, reads := e.client(false), e.client(true)
		pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client, WaitReplicas: waitReplicas}, nil)
		must(err)
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client: client, ReadClient: reads, ConsumerGroup: benchGroup, MaxInFlight: maxInFlight,
			BlockTime: 100 * time.Millisecond,
		}, nil)
		must(err)
		return pub, sub, closer(pub, sub, client, reads)
	}
}

// The tuned watermill-redisstream: consumers of one group reading at once,
// and its publisher's connection pool.
const (
	tunedConsumers = 8
	tunedPoolSize  = 64
)

// fanIn subscribes several subscribers of one consumer group to a topic and
// merges what they deliver into one channel, so that a Router handles up to
// one message per subscriber at a time. watermill-benchmark runs AMQP, NATS
// and Google Cloud Pub/Sub this way (its "multiplier"); it is how a
// Watermill user scales a subscriber that delivers one message at a time.
type fanIn []message.Subscriber

func (f fanIn) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	var wg sync.WaitGroup
	for _, sub := range f {
		in, err := sub.Subscribe(ctx, topic)
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			for msg := range in {
				select {
				case out <- msg:
				case <-ctx.Done():
					return // the Router stopped; Close ends the subscriber
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out, nil
}

// Close closes every subscriber; each closes its own client.
func (f fanIn) Close() error {
	var errs []error
	for _, sub := range f {
		errs = append(errs, sub.Close())
	}
	return errors.Join(errs...)
}

type closable interface{ Close() error }

func closer(things ...closable) func() {
	return func() {
		for _, c := range things {
			_ = c.Close()
		}
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// pendingEntries is how many entries the bench group left unacked.
func pendingEntries(ctx context.Context, e *env, topic string) int64 {
	pending, err := e.admin.XPending(ctx, topic, benchGroup).Result()
	if err != nil {
		return 0 // no group: nothing pending
	}
	return pending.Count
}
