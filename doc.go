// Package redisbus makes Redis a message bus for Watermill: Publishers and
// Subscribers for services that run as several processes and need messages
// to cross process and host boundaries. It offers two delivery models over
// one Redis client, and both implement Watermill's [message.Publisher] and
// [message.Subscriber], so a [message.Router] runs handlers on either.
//
//	Model          Types                                Delivery                         Pick it for
//	Pub/Sub        Publisher, Subscriber                best-effort, sub-millisecond     cache invalidation, live updates
//	Streams        StreamsPublisher, StreamsSubscriber  at-least-once, consumer groups   work queues, orders, events
//
// Every constructor takes a config whose Client is any
// [github.com/redis/go-redis/v9.UniversalClient] (a client, a cluster, a
// ring or a failover client). redisbus never closes that client, so one
// client can serve every publisher and subscriber of a process. The zero
// value of every other config field means its documented default, and each
// config has a Validate method; an invalid field is reported as a
// [*ConfigError].
//
// # Pub/Sub: best effort
//
// [Publisher] sends with PUBLISH (SPUBLISH with [PublisherConfig.Sharded]):
// every [Subscriber] connected to the topic at that moment receives the
// message, and one that is not connected never will. Concurrent publishes
// share round trips, and [PublisherConfig.Async] lets a request handler
// publish without waiting for Redis. [Publisher.PublishCount] tells how many
// subscribers received a message.
//
// A Subscriber keeps each topic's messages in a bounded inbox
// ([SubscriberConfig.InboxSize], [SubscriberConfig.InboxBytes],
// [SubscriberConfig.InboxOverflow]) until a handler acks them, so a
// handler that falls behind loses messages instead of stalling the
// connection; every drop is counted in [SubscriberStats]. When a
// subscription connection is lost and comes back,
// [SubscriberConfig.OnReconnect] receives the [LossWindow] in which messages
// may have been missed.
//
// # Streams: at least once
//
// [StreamsPublisher] appends messages to a Redis stream per topic (XADD) and
// returns once Redis has stored them; [StreamsPublisherConfig.Trim] bounds
// the stream ([StreamTrim]: by default only what every consumer group has
// consumed is trimmed).
//
// [StreamsSubscriber] reads a stream in a consumer group
// ([StreamsSubscriberConfig.ConsumerGroup]): every process of a service runs
// one subscriber in the same group, and each entry goes to one of them, so
// the group is a worker pool. Ack removes an entry from the group's pending
// list; Nack delivers it again after a backoff; the entries of a process that
// died are claimed by the others after [StreamsSubscriberConfig.ClaimMinIdle].
// An entry that reached a handler [StreamsSubscriberConfig.MaxDeliveries]
// times without being acked, or that cannot be decoded, is moved to a
// dead-letter stream (topic + ":dead" unless
// [StreamsSubscriberConfig.DeadLetterTopic] says otherwise), with the
// DeadLetterField* fields ([DeadLetterFieldReason] and others) saying why.
// A dead-letter stream is an ordinary stream: subscribe to it to inspect or
// replay its entries.
//
// Each subscriber reads under a consumer name
// ([StreamsSubscriberConfig.Consumer], by default the host name), leased in
// Redis to one live subscriber at a time so that two processes never take
// each other's entries. Keep names stable across restarts: a restarted
// process then takes up its own pending entries at once. Messages carry
// their entry ID and delivery count in [MetadataStreamID] and
// [MetadataDeliveryCount]. Without a ConsumerGroup the subscriber reads in
// fan-out: every subscriber reads every entry.
//
// # Marshalers
//
// Pub/Sub messages are encoded by a [Marshaler]: [EnvelopeMarshaler] (the
// default) carries the UUID, metadata and payload in a small binary
// envelope, and delivers anything else that arrives on the channel, such as
// a plain PUBLISH from PHP or redis-cli, as a raw payload. [RawMarshaler]
// sends the bare payload, for subscribers that are not Watermill. Stream
// entries are encoded by a [StreamsMarshaler]: [DefaultStreamsMarshaler]
// writes the fields watermill-redisstream writes, so the two libraries read
// each other's entries, and accepts plain entries written in other
// languages.
//
// # Errors
//
// Constructors and Validate return a [*ConfigError] naming the offending
// field, and so does a StreamsSubscriber's Subscribe when its explicit
// consumer name is held by a live subscriber. Publish after Close returns
// [ErrPublisherClosed]; Subscribe after Close returns [ErrSubscriberClosed].
//
// # Related packages
//
// Package [github.com/redisbus/watermill-redisbus/wsroute] routes WebSocket
// messages to clients connected to any node of a service, over this
// package's Pub/Sub. Package
// [github.com/redisbus/watermill-redisbus/pubsubtest] is the test harness:
// private redis-servers, a proxy that breaks connections, and Watermill's
// universal test suite. Package
// [github.com/redisbus/watermill-redisbus/redisbusprom] exports redisbus'
// own metrics to Prometheus (consumer-group lag, pending entries, dead
// letters, drops), with a Grafana dashboard, and package
// [github.com/redisbus/watermill-redisbus/redisbusotel] carries
// OpenTelemetry traces across Redis in message metadata; neither is
// imported unless you do.
//
// The README and the docs directory in the repository cover guarantees,
// failure behaviour, operating Redis, the wire formats and the Redis
// versions each feature needs.
package redisbus
