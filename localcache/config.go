package localcache

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Config configures a Cache. The zero value of every field but Client
// means its documented default. Give every node of one cache the same
// Topic, MaxKeyBytes and Tags.
type Config[V any] struct {
	// Client carries the invalidations: the Cache subscribes and publishes
	// with it (a connection of its own for the subscription). Required.
	// The Cache never closes it.
	Client redis.UniversalClient

	// Topic is the Pub/Sub channel the invalidations travel on. Caches of
	// different data that must never invalidate each other take different
	// topics. Empty means "localcache:invalidations".
	Topic string

	// Sharded publishes and subscribes with SPUBLISH and SSUBSCRIBE (Redis
	// 7.0+), for Redis Cluster: one master carries each invalidation
	// instead of every master.
	Sharded bool

	// MaxEntries bounds how many entries the cache holds; when it is full,
	// an entry not read since the clock hand last passed it goes (see
	// Cache). Zero means 10,000.
	MaxEntries int

	// MaxBytes bounds the bytes the entries hold: their keys, tags, what
	// Size says of their values, and about 100 bytes of bookkeeping each.
	// An entry that alone exceeds it is not stored. Zero means 64 MiB;
	// negative means no byte limit.
	MaxBytes int

	// Size tells the bytes a value holds, for MaxBytes. Nil counts a
	// string's or a []byte's length, and nothing for other types.
	Size func(key string, value V) int

	// TTL is how long an entry is served after it was loaded, even if no
	// invalidation comes: a bound on the staleness a writer that forgets
	// to invalidate can cause. Zero means 1 minute; negative means entries
	// never expire.
	TTL time.Duration

	// Tags, if set, tells the tags a loaded value is stored under, for
	// InvalidateTag: "category:7" for a product of category 7, say. It is
	// called with the value, after it was loaded, so tags may depend on
	// what was read.
	Tags func(key string, value V) []string

	// MaxKeyBytes bounds the length of keys, tags and prefixes. A longer
	// key is never stored (its reads go to the loader), and a longer
	// invalidation can match nothing stored: both cost nothing more. Zero
	// means 1 KiB.
	MaxKeyBytes int

	// MaxTags bounds how many tags an entry has; a value Tags gives more
	// is returned, and not stored. Zero means 16.
	MaxTags int

	// HealthCheckInterval is how long the subscription connection may be
	// silent before it is pinged; with no answer within another interval
	// it counts as lost, and the cache stops serving entries. It bounds
	// how long a node cut off silently (a partition, a dead load balancer)
	// keeps serving entries whose invalidations it is missing. Zero means
	// 1 second; at least 10ms.
	HealthCheckInterval time.Duration

	// SubscribeTimeout bounds how long New waits for Redis to confirm the
	// subscription. Zero means 10 seconds.
	SubscribeTimeout time.Duration
}

func (c *Config[V]) setDefaults() {
	if c.Topic == "" {
		c.Topic = "localcache:invalidations"
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = 10_000
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 64 << 20
	}
	if c.TTL == 0 {
		c.TTL = time.Minute
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = 1024
	}
	if c.MaxTags == 0 {
		c.MaxTags = 16
	}
	if c.HealthCheckInterval == 0 {
		c.HealthCheckInterval = time.Second
	}
	if c.SubscribeTimeout == 0 {
		c.SubscribeTimeout = 10 * time.Second
	}
}

// Validate reports the first invalid field, if any.
func (c Config[V]) Validate() error {
	field := func(name, problem string) error {
		return &redisbus.ConfigError{Field: "localcache.Config." + name, Problem: problem}
	}
	switch {
	case c.Client == nil:
		return field("Client", "is required")
	case c.MaxEntries < 0:
		return field("MaxEntries", fmt.Sprintf("must not be negative, got %d", c.MaxEntries))
	case c.MaxKeyBytes < 0:
		return field("MaxKeyBytes", fmt.Sprintf("must not be negative, got %d", c.MaxKeyBytes))
	case c.MaxTags < 0:
		return field("MaxTags", fmt.Sprintf("must not be negative, got %d", c.MaxTags))
	case c.HealthCheckInterval < 0:
		return field("HealthCheckInterval", "must not be negative")
	case c.HealthCheckInterval > 0 && c.HealthCheckInterval < redisbus.MinHealthCheckInterval:
		// Below it a healthy connection counts as lost, and the cache
		// clears over and over.
		return field("HealthCheckInterval", fmt.Sprintf("must be at least %s, got %s", redisbus.MinHealthCheckInterval, c.HealthCheckInterval))
	case c.SubscribeTimeout < 0:
		return field("SubscribeTimeout", "must not be negative")
	}
	return nil
}
