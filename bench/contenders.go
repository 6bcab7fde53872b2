package main

import (
	"context"
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
}

// client returns a new client whose round trips are counted.
func (e *env) client(noRetry bool) *redis.Client {
	opt := *e.opt
	if noRetry {
		opt.MaxRetries = -1
	}
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
}

const benchGroup = "bench"

func contenders() []*contender {
	return []*contender{
		{
			name: "redisbus Pub/Sub", family: "pubsub",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				client := e.client(false)
				pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
				must(err)
				sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, InboxSize: n + 1024}, nil)
				must(err)
				return pub, sub, closer(pub, sub, client)
			},
		},
		{
			name: cPubSubAsync, family: "pubsub",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				client := e.client(false)
				pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Async: true}, nil)
				must(err)
				sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, InboxSize: n + 1024}, nil)
				must(err)
				return pub, sub, closer(pub, sub, client)
			},
		},
		{
			name: "redisbus Streams (ordered)", family: "streams", stream: true, shares: true,
			watermill: redisbusStreams(1),
		},
		{
			name: "redisbus Streams (MaxInFlight 64)", family: "streams", stream: true,
			watermill: redisbusStreams(64),
		},
		{
			// The configuration watermill-benchmark uses: default settings, a
			// consumer group, separate clients for publishing and
			// subscribing.
			name: "watermill-redisstream v1.4.5", family: "streams", stream: true, peer: true, shares: true,
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
			name: "Watermill GoChannel", family: "inproc",
			watermill: func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
				pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
				return pubsub, pubsub, closer(pubsub)
			},
		},
		{name: cRawPublish, family: "pubsub", raw: rawPubSub{}},
		{name: cRawStreams, family: "streams", raw: rawStreams{}, stream: true},
		{name: cRawCoalescedPublish, family: "pubsub", reference: true, raw: rawPubSub{coalesced: true}},
		{name: cRawCoalescedXAdd, family: "streams", stream: true, reference: true, raw: rawStreams{coalesced: true}},
	}
}

func redisbusStreams(maxInFlight int) func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
	return func(e *env, n int) (message.Publisher, message.Subscriber, func()) {
		client, reads := e.client(false), e.client(true)
		pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
		must(err)
		sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client: client, ReadClient: reads, ConsumerGroup: benchGroup, MaxInFlight: maxInFlight,
			BlockTime: 100 * time.Millisecond,
		}, nil)
		must(err)
		return pub, sub, closer(pub, sub, client, reads)
	}
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
