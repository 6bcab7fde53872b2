// Package dedup drops duplicate messages across processes, with Redis
// holding what was seen: the deduplication that Watermill's
// middleware.Deduplicator leaves to "an ExpiringKeyRepository backed by
// Redis".
//
// At-least-once delivery (redisbus Streams, and every Watermill Pub/Sub but
// SQL) hands a message to a handler again when its first delivery may have
// failed: its process crashed, or was paused, or an ack was lost. And
// publishers retry: a Publish whose reply was lost is repeated and the
// message is stored twice. This package drops those copies, for a Window:
//
//   - Repository is middleware.ExpiringKeyRepository for Watermill's
//     Deduplicator: one round trip per check (SET NX PX), correct across any
//     number of processes. The Deduplicator marks a message before its
//     handler runs, so a message whose handler fails, or whose process dies,
//     is dropped when it comes again: lost.
//   - Middleware is a handler middleware that marks a message only once it
//     was handled (acked), holding a renewed claim meanwhile: a message
//     whose handler failed or died runs again; one whose handler succeeded is
//     dropped when it comes again. A crash between a side effect and the
//     mark still runs the side effect twice, unless the side effect is in
//     Redis and committed with the mark (Middleware.Commit): then each
//     message's side effect happens exactly once.
//   - Publisher wraps a message.Publisher (also as a
//     message.PublisherDecorator) so that a retried Publish of a message
//     UUID within the Window is stored once. Over a redisbus StreamsPublisher
//     the check and the XADD are one Lua script, and the message is stored
//     once even across lost replies and crashes.
//
// What each guarantees, what it costs, and how to choose:
// docs/dedup.md in the repository.
//
// Keys: Config.Prefix, then the message's name (the handler's name and the
// UUID, or the topic and the UUID), hashed when longer than 128 bytes or
// when it holds a brace, so that messages cannot make keys big or pick
// their Redis Cluster slot. Every command touches one key, so each works on
// Redis Cluster; Commit's transaction needs its keys in one slot (a hash
// tag in Prefix). Requires Redis 7.0 or newer (SET with both NX and GET).
package dedup
