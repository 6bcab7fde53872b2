package localcache

import (
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// applyCache returns a cache of n entries, "key:0"…, each tagged
// "tag:<i%100>", made without Redis: applying an invalidation touches
// only the process.
func applyCache(n int) *Cache[[]byte] {
	config := Config[[]byte]{Client: nil}
	config.setDefaults()
	c := &Cache[[]byte]{
		config:  config,
		logger:  watermill.NopLogger{},
		id:      "bench",
		store:   newStore[[]byte](config.MaxEntries, config.MaxBytes),
		flights: map[string]*flight[[]byte]{},
		syncs:   map[string]chan struct{}{},
		up:      true,
	}
	for i := range n {
		c.put("key:"+strconv.Itoa(i), "tag:"+strconv.Itoa(i%100))
	}
	return c
}

func (c *Cache[V]) put(key, tag string) {
	var zero V
	c.store.put(&entry[V]{key: key, value: zero, tags: []string{tag}, cost: 100, expires: never}, 0)
}

func benchApply(b *testing.B, c *Cache[[]byte], inv invalidation, refill func()) {
	for b.Loop() {
		c.mu.Lock()
		c.applyLocked(inv)
		c.mu.Unlock()
		if refill != nil {
			refill()
		}
	}
}

// The cost of applying an invalidation on a node holding 10,000 entries,
// under the write lock (which holds reads back meanwhile). "absent" is the
// common case: the key is not cached on this node.
func BenchmarkApply(b *testing.B) {
	b.Run("key absent", func(b *testing.B) {
		benchApply(b, applyCache(10_000), invalidation{kind: kindKey, name: "key:absent"}, nil)
	})
	b.Run("key present, stored again", func(b *testing.B) {
		c := applyCache(10_000)
		benchApply(b, c, invalidation{kind: kindKey, name: "key:42"}, func() { c.put("key:42", "tag:42") })
	})
	b.Run("tag absent", func(b *testing.B) {
		benchApply(b, applyCache(10_000), invalidation{kind: kindTag, name: "tag:absent"}, nil)
	})
	b.Run("prefix, 10000 entries scanned", func(b *testing.B) {
		benchApply(b, applyCache(10_000), invalidation{kind: kindPrefix, name: "other:"}, nil)
	})
}

// What a node does for each invalidation that arrives from another node:
// check the subscription's drop counter, read the message, apply it. (The
// Subscriber's own work, from the socket to the channel, is redisbus'.)
func BenchmarkReceive(b *testing.B) {
	c := applyCache(10_000)
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: nothing is subscribed
	defer client.Close()
	var err error
	if c.sub, err = redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil); err != nil {
		b.Fatal(err)
	}
	defer c.sub.Close()
	msg := message.NewMessage("uuid", []byte("key:absent"))
	msg.Metadata.Set(originKey, "another node")
	for b.Loop() {
		c.receive(msg)
	}
	if c.stats.invalidations.Load() == 0 {
		b.Fatal("nothing applied")
	}
}
