// Package localcache is a process-local cache that stays consistent across
// the nodes of a service: a node that changes data invalidates it, by key,
// by key prefix or by tag, and every node drops its copy, over redisbus
// Pub/Sub. What sets it apart from a map and a subscription is that it
// never trusts what it cannot vouch for: a node that may have missed
// invalidations stops serving its entries.
//
//	cache, err := localcache.New(localcache.Config[Product]{Client: client}, logger)
//
//	// Any node: a hit, or a load from the database, stored for next time.
//	product, err := cache.GetOrLoad(ctx, "product:42", func(ctx context.Context) (Product, error) {
//		return db.Product(ctx, 42)
//	})
//
//	// The node that changes it: first the database, then every node's cache.
//	err = db.SetPrice(ctx, 42, 12.49)
//	err = cache.Invalidate(ctx, "product:42")
//
// # Guarantee
//
// No read returns a value older than an invalidation the node applied or
// could have missed. Once a node has applied an invalidation, no read on it
// returns a value it covers that was loaded before the change; and a node
// whose subscription to the invalidations is down serves nothing from the
// cache, and clears it when the subscription is back. Precisely:
//
//   - An invalidation removes what it covers at once on the node that
//     sends it, and on every other node when it arrives, within a
//     millisecond or so on a healthy network. Reads in between return the
//     old value, as they would with any asynchronous invalidation.
//   - Loads race with invalidations: a node reads the old value from the
//     database, another node writes and invalidates, then the first stores
//     what it read, and would serve it until it expires. GetOrLoad does not
//     store a value when an invalidation that covers it (its key, a prefix
//     of it, one of its tags) was applied while it loaded; a call that
//     began after that invalidation does not get the value, it loads
//     again. Concurrent calls share one load.
//   - Redis Pub/Sub keeps nothing: invalidations published while a node's
//     subscription is down are lost to it. When the Subscriber finds the
//     connection lost (at once when it breaks, after one to two
//     HealthCheckIntervals of silence when it goes quiet), the cache clears
//     and goes down: reads miss, GetOrLoad loads and stores nothing. When
//     the subscription is back (the Subscriber's OnReconnect, with the loss
//     window), it clears again, and so no entry stored before the window
//     ended is served, and no load that began before is stored. The same
//     when the subscription's inbox overflows, or a message on the topic is
//     not an invalidation: the cache clears.
//   - New returns once Redis confirmed the subscription: nothing is stored
//     before, so no invalidation published at start-up is missed.
//   - After Sync, no read returns a value older than an invalidation Redis
//     accepted, from any node, before Sync was called.
//
// What it cannot see, it cannot cover. A connection that goes silent is
// found lost after one to two HealthCheckIntervals (1 s by default): until
// then the node serves entries whose invalidations it may be missing, and
// clears them when it finds out. A writer that changes data without
// invalidating is bounded only by TTL. Invalidate after the change is
// stored, not before: a node that loads between the invalidation and the
// change caches the old value.
//
// # Bounds
//
// MaxEntries and MaxBytes bound the cache. Eviction is CLOCK, an
// approximation of least recently used in which a read sets a bit instead
// of moving its entry, so that reads share a read lock. Entries expire after
// TTL. Keys, tags and prefixes longer than MaxKeyBytes are never stored nor
// kept, and an entry has at most MaxTags tags, so that hostile input costs
// no more than the bounds say. To tell, when a load ends, whether an
// invalidation covered it, the cache keeps the last 1,024 invalidations (1
// MiB of names at most); a load that outlives them is not stored.
//
// # Wire format
//
// Invalidations are Pub/Sub messages on Config.Topic whose payload is text,
// so that any Redis client can send them: "key:product:42",
// "prefix:product:", "tag:category:7" or "all":
//
//	PUBLISH localcache:invalidations "key:product:42"
//
// A message that is none of these clears the caches: it may have meant to
// invalidate something.
package localcache
