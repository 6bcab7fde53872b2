package localcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// ErrClosed is what Invalidate and Sync return after Close.
var ErrClosed = errors.New("localcache: cache is closed")

// errLoaderPanicked is what the calls sharing a load get when the loader
// panicked (the call that ran it panics).
var errLoaderPanicked = errors.New("localcache: the loader panicked")

// originKey is the metadata of the messages a node publishes that names
// it, so that it skips its own invalidations (it applied them when it sent
// them) and finds its own Sync markers.
const originKey = "localcache_origin"

// Cache is a process-local cache kept consistent across nodes by
// invalidations over redisbus Pub/Sub. See the package documentation for
// what it guarantees. Its methods are safe for concurrent use.
type Cache[V any] struct {
	config Config[V]
	logger watermill.LoggerAdapter
	id     string // names this node's messages (originKey)
	epoch  time.Time
	// now is the clock entries expire on: monotonic, from epoch. Tests
	// replace it.
	now func() time.Duration

	sub *redisbus.Subscriber
	pub *redisbus.Publisher

	mu    sync.RWMutex
	store *store[V]
	// up says whether entries are served and stored: the topic is
	// subscribed and its connection up, so that every invalidation
	// published from now on arrives. subscribed and connUp are its halves,
	// which the consuming goroutine and the Subscriber's callbacks set.
	up, subscribed, connUp, closed bool
	seq                            uint64 // numbers the invalidations applied
	log                            invalidationLog
	flights                        map[string]*flight[V]
	syncs                          map[string]chan struct{}
	syncSeq                        uint64

	msgSeq atomic.Uint64 // numbers this node's messages

	dropped uint64 // the Subscriber's Stats().Dropped last seen; the consuming goroutine's

	stats counters

	ctx       context.Context // ends with Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// flight is a load in progress, which the GetOrLoad calls of its key that
// come meanwhile share.
type flight[V any] struct {
	start uint64 // Cache.seq when it began
	done  chan struct{}
	value V
	err   error
	// staleAt is the number of the first invalidation since start that
	// covers the value (zero if none): the value may predate it, so it is
	// not stored, and calls that joined after it load again.
	staleAt uint64
}

type counters struct {
	hits, misses, loads, shared, discarded, skipped, bypassed atomic.Uint64
	evicted, expired, invalidations, losses, unreadable       atomic.Uint64
}

// Stats are a Cache's counters since New, and its size now.
type Stats struct {
	Entries int  // entries held now
	Bytes   int  // what they cost, as MaxBytes counts
	Up      bool // entries are served: the subscription is up
	Hits    uint64
	Misses  uint64
	// Loads counts the loader calls of GetOrLoad, bypasses included;
	// Shared, the calls that got another call's load instead.
	Loads, Shared uint64
	// Discarded counts loaded values not stored because an invalidation
	// that covers them, or a loss, came while they loaded.
	Discarded uint64
	// Skipped counts loaded values not stored for the bounds: larger than
	// MaxBytes, more tags than MaxTags, a tag longer than MaxKeyBytes.
	Skipped uint64
	// Bypassed counts GetOrLoad calls that called the loader without the
	// cache: while it was down, for a key longer than MaxKeyBytes, or
	// after Close.
	Bypassed uint64
	Evicted  uint64 // entries evicted for MaxEntries or MaxBytes
	Expired  uint64 // entries removed after their TTL
	// Invalidations counts the invalidations applied: this node's (when
	// sent) and the other nodes'.
	Invalidations uint64
	// Losses counts the times invalidations may have been missed (the
	// subscription lost or ended, its inbox overflowing, a message that
	// cannot be read); each cleared the cache.
	Losses     uint64
	Unreadable uint64 // messages on the topic that are no invalidation
}

// New creates a Cache and returns once its subscription to the
// invalidations is confirmed: a value it stores is never older than an
// invalidation published after that. It fails when Redis does not confirm
// within SubscribeTimeout, or refuses. A nil logger means no logging.
func New[V any](config Config[V], logger watermill.LoggerAdapter) (*Cache[V], error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	c := &Cache[V]{
		config:  config,
		logger:  logger,
		id:      watermill.NewShortUUID(),
		epoch:   time.Now(),
		store:   newStore[V](config.MaxEntries, config.MaxBytes),
		connUp:  true, // until a connection is found lost
		flights: map[string]*flight[V]{},
		syncs:   map[string]chan struct{}{},
	}
	c.now = func() time.Duration { return time.Since(c.epoch) }
	c.ctx, c.cancel = context.WithCancel(context.Background())
	var err error
	c.pub, err = redisbus.NewPublisher(redisbus.PublisherConfig{Client: config.Client, Sharded: config.Sharded}, logger)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.sub, err = redisbus.NewSubscriber(redisbus.SubscriberConfig{
		Client:              config.Client,
		Sharded:             config.Sharded,
		HealthCheckInterval: config.HealthCheckInterval,
		SubscribeTimeout:    config.SubscribeTimeout,
		UnsubscribeAfter:    -1, // the topic is in use until Close
		OnDisconnect:        c.disconnected,
		OnReconnect:         c.reconnected,
	}, logger)
	if err != nil {
		c.cancel()
		_ = c.pub.Close()
		return nil, err
	}
	messages, err := c.sub.Subscribe(c.ctx, config.Topic)
	if err != nil {
		c.cancel()
		_ = c.sub.Close()
		_ = c.pub.Close()
		return nil, fmt.Errorf("localcache: %w", err)
	}
	c.setSubscribed(true)
	c.wg.Go(func() { c.consume(messages) })
	return c, nil
}

// Get returns key's value when the cache holds it and serves entries (its
// subscription is up). It never loads.
func (c *Cache[V]) Get(key string) (V, bool) {
	// The length first: a huge key is not even hashed.
	if len(key) <= c.config.MaxKeyBytes {
		c.mu.RLock()
		if c.up {
			if e, ok := c.store.lookup(key, c.now()); ok {
				v := e.value
				c.mu.RUnlock()
				c.stats.hits.Add(1)
				return v, true
			}
		}
		c.mu.RUnlock()
	}
	c.stats.misses.Add(1)
	var zero V
	return zero, false
}

// GetOrLoad returns key's value from the cache, or from load, which must
// read the source of truth (a database) when it is called, not before:
// the cache stores what it returns unless an invalidation that covers it
// (its key, a prefix of it, one of its tags, or a loss) was applied while
// it ran, since the value may then predate the change. Concurrent calls
// for one key share one load; a call that comes after an invalidation
// that covers the load in progress does not get its value, it loads again.
//
// While the cache is down (its subscription lost), for a key longer than
// MaxKeyBytes, and after Close, GetOrLoad calls load and stores nothing.
// A load's error is returned and not stored. When the call that runs the
// load gives up (its ctx ends), the calls sharing it load for themselves.
// A loader must not call GetOrLoad for its own key: it would wait for
// itself.
func (c *Cache[V]) GetOrLoad(ctx context.Context, key string, load func(context.Context) (V, error)) (V, error) {
	if v, ok := c.Get(key); ok {
		return v, nil
	}
	var zero V
	for {
		c.mu.Lock()
		if !c.up || len(key) > c.config.MaxKeyBytes {
			c.mu.Unlock()
			c.stats.bypassed.Add(1)
			c.stats.loads.Add(1)
			return load(ctx)
		}
		now := c.now()
		if c.store.removeExpired(key, now) {
			c.stats.expired.Add(1)
		}
		if e, ok := c.store.lookup(key, now); ok { // a load stored it since Get
			v := e.value
			c.mu.Unlock()
			return v, nil
		}
		f := c.flights[key]
		leader := f == nil
		if leader {
			f = &flight[V]{start: c.seq, done: make(chan struct{})}
			c.flights[key] = f
		}
		joinedAt := c.seq
		c.mu.Unlock()

		if leader {
			c.fly(ctx, key, f, load)
		} else {
			c.stats.shared.Add(1)
			select {
			case <-f.done:
			case <-ctx.Done():
				return zero, context.Cause(ctx)
			}
		}
		if f.err != nil {
			if !leader && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				continue // the call that ran the load gave up, not this one
			}
			return zero, f.err
		}
		if f.staleAt == 0 || f.staleAt > joinedAt {
			// No invalidation that covers the value had been applied
			// when this call began: it is as fresh as a hit would have
			// been.
			return f.value, nil
		}
	}
}

// fly runs f's load and lands it. When the loader (or Config.Tags, or
// Config.Size) panics, the calls sharing the load get errLoaderPanicked,
// and the panic goes on up this call.
func (c *Cache[V]) fly(ctx context.Context, key string, f *flight[V], load func(context.Context) (V, error)) {
	c.stats.loads.Add(1)
	landed := false
	defer func() {
		if !landed {
			var zero V
			f.value, f.err = zero, errLoaderPanicked
			c.land(key, f, nil, 0, false)
		}
	}()
	f.value, f.err = load(ctx)
	var tags []string
	var cost int
	storable := false
	if f.err == nil {
		// Outside the lock: these are the application's functions.
		tags, cost, storable = c.describe(key, f.value)
	}
	landed = true
	c.land(key, f, tags, cost, storable)
}

// describe returns the tags a value is stored under, deduplicated, and
// what it costs, and whether it may be stored.
func (c *Cache[V]) describe(key string, value V) (tags []string, cost int, ok bool) {
	if c.config.Tags != nil {
		tags = c.config.Tags(key, value)
		if len(tags) > c.config.MaxTags {
			return nil, 0, false
		}
		tags = slices.Clone(tags) // the application may reuse its slice
		slices.Sort(tags)
		tags = slices.Compact(tags)
		for _, tag := range tags {
			if len(tag) > c.config.MaxKeyBytes {
				return nil, 0, false
			}
			cost += len(tag)
		}
	}
	cost += entryOverhead + len(key)
	if c.config.Size != nil {
		cost += max(0, c.config.Size(key, value))
	} else {
		switch v := any(value).(type) {
		case string:
			cost += len(v)
		case []byte:
			cost += len(v)
		}
	}
	return tags, cost, c.store.fits(cost)
}

// land ends f: the value is stored unless an invalidation that covers it
// was applied since the load began, and the calls sharing it are
// released.
func (c *Cache[V]) land(key string, f *flight[V], tags []string, cost int, storable bool) {
	c.mu.Lock()
	if c.flights[key] == f {
		delete(c.flights, key)
	}
	if f.err == nil {
		if at := c.log.firstCover(f.start, key, tags); at != 0 && (f.staleAt == 0 || at < f.staleAt) {
			f.staleAt = at
		}
		switch {
		case f.staleAt != 0 || !c.up:
			// !c.up implies an invalidation of all since the load began
			// (a flight begins only while up): this is for clarity.
			c.stats.discarded.Add(1)
		case !storable:
			c.stats.skipped.Add(1)
		default:
			now := c.now()
			expires := never
			if c.config.TTL > 0 && c.config.TTL < never-now { // a TTL of centuries is none
				expires = now + c.config.TTL
			}
			evicted, expired := c.store.put(&entry[V]{key: key, value: f.value, tags: tags, cost: cost, expires: expires}, now)
			c.stats.evicted.Add(uint64(evicted))
			c.stats.expired.Add(uint64(expired))
		}
	}
	c.mu.Unlock()
	close(f.done)
}

// Invalidate removes keys' entries on every node: here at once, then on
// the others through Redis. It returns once Redis accepted the
// invalidations; then every node whose subscription is up receives them,
// and every other node clears its cache when it finds its subscription
// lost. Call it after the change is stored in the source of truth: a node
// that loads before the change is stored can cache the old value again.
// An error (Redis unreachable, ctx done) means the other nodes may not have
// it: call it again.
func (c *Cache[V]) Invalidate(ctx context.Context, keys ...string) error {
	return c.invalidate(ctx, kindKey, keys)
}

// InvalidatePrefix removes, on every node, the entries whose key starts
// with one of prefixes (an empty prefix: all of them). See Invalidate.
// Each prefix costs a pass over the entries of every node.
func (c *Cache[V]) InvalidatePrefix(ctx context.Context, prefixes ...string) error {
	return c.invalidate(ctx, kindPrefix, prefixes)
}

// InvalidateTag removes, on every node, the entries stored under one of
// tags (see Config.Tags). See Invalidate.
func (c *Cache[V]) InvalidateTag(ctx context.Context, tags ...string) error {
	return c.invalidate(ctx, kindTag, tags)
}

// InvalidateAll removes every entry on every node. See Invalidate.
func (c *Cache[V]) InvalidateAll(ctx context.Context) error {
	return c.invalidate(ctx, kindAll, []string{""})
}

func (c *Cache[V]) invalidate(ctx context.Context, k kind, names []string) error {
	if len(names) == 0 {
		return nil
	}
	invs := make([]invalidation, len(names))
	for i, name := range names {
		invs[i] = invalidation{kind: k, name: name}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	for _, inv := range invs {
		c.applyLocked(inv)
	}
	c.mu.Unlock()
	c.stats.invalidations.Add(uint64(len(invs)))
	msgs := make([]*message.Message, len(invs))
	for i, inv := range invs {
		msgs[i] = c.message(ctx, inv)
	}
	return c.publish("invalidations", msgs...)
}

// publish publishes msgs on the topic; what says what they are, for the
// error.
func (c *Cache[V]) publish(what string, msgs ...*message.Message) error {
	err := c.pub.Publish(c.config.Topic, msgs...)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redisbus.ErrPublisherClosed):
		return ErrClosed // Close came meanwhile
	default:
		return fmt.Errorf("localcache: publish %s: %w", what, err)
	}
}

// message returns inv as a message naming this node.
func (c *Cache[V]) message(ctx context.Context, inv invalidation) *message.Message {
	uuid := c.id + "-" + strconv.FormatUint(c.msgSeq.Add(1), 10) // unique, and cheaper than a UUID
	msg := message.NewMessageWithContext(ctx, uuid, inv.encode())
	msg.Metadata.Set(originKey, c.id)
	return msg
}

// applyLocked applies an invalidation here. The caller holds mu.
func (c *Cache[V]) applyLocked(inv invalidation) {
	if inv.kind != kindAll && len(inv.name) > c.config.MaxKeyBytes {
		// No key, prefix or tag this long is stored, or loading to be
		// stored: it covers nothing here, and costs nothing more.
		return
	}
	c.seq++
	switch inv.kind {
	case kindKey:
		c.store.removeKey(inv.name)
		if f := c.flights[inv.name]; f != nil {
			c.detachLocked(inv.name, f)
		}
	case kindPrefix:
		c.store.removePrefix(inv.name)
		for key, f := range c.flights {
			if inv.covers(key, nil) {
				c.detachLocked(key, f)
			}
		}
	case kindTag:
		// Loads in flight learn their tags when they end; the log tells
		// them then.
		c.store.removeTag(inv.name)
	case kindAll:
		c.store.reset()
		for key, f := range c.flights {
			c.detachLocked(key, f)
		}
	}
	c.log.add(record{seq: c.seq, invalidation: inv})
}

// detachLocked marks a load in flight stale from the invalidation being
// applied, and takes it out of the flights, so that calls from now on
// start a load of their own rather than wait for a value they could not
// use. The caller holds mu.
func (c *Cache[V]) detachLocked(key string, f *flight[V]) {
	f.staleAt = c.seq
	delete(c.flights, key)
}

// Len returns how many entries the cache holds.
func (c *Cache[V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.store.len()
}

// Stats returns the cache's counters.
func (c *Cache[V]) Stats() Stats {
	c.mu.RLock()
	entries, bytes, up := c.store.len(), c.store.bytes, c.up
	c.mu.RUnlock()
	return Stats{
		Entries:       entries,
		Bytes:         bytes,
		Up:            up,
		Hits:          c.stats.hits.Load(),
		Misses:        c.stats.misses.Load(),
		Loads:         c.stats.loads.Load(),
		Shared:        c.stats.shared.Load(),
		Discarded:     c.stats.discarded.Load(),
		Skipped:       c.stats.skipped.Load(),
		Bypassed:      c.stats.bypassed.Load(),
		Evicted:       c.stats.evicted.Load(),
		Expired:       c.stats.expired.Load(),
		Invalidations: c.stats.invalidations.Load(),
		Losses:        c.stats.losses.Load(),
		Unreadable:    c.stats.unreadable.Load(),
	}
}

// Close stops the cache: it drops every entry, unsubscribes and returns
// once its goroutines have exited. Afterwards Get misses, GetOrLoad calls
// its loader, and Invalidate and Sync return ErrClosed. It does not close
// the Client, and is idempotent.
func (c *Cache[V]) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed, c.up = true, false
		c.applyLocked(invalidation{kind: kindAll})
		c.mu.Unlock()
		c.cancel()
		c.closeErr = errors.Join(c.sub.Close(), c.pub.Close())
		c.wg.Wait()
	})
	return c.closeErr
}
