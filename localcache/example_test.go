package localcache_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/localcache"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// newRedisClient connects the examples to the tests' Redis. In your code:
// redis.NewClient(&redis.Options{Addr: "localhost:6379"}).
func newRedisClient() *redis.Client {
	client, err := pubsubtest.SharedClient()
	if err != nil {
		panic(err)
	}
	return client
}

// Product is what the examples cache.
type Product struct {
	Name     string
	Price    float64
	Category string
}

// database stands for the source of truth that every node reads.
type database struct {
	mu       sync.Mutex
	products map[string]Product
}

func (db *database) Product(_ context.Context, key string) (Product, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.products[key], nil
}

func (db *database) SetPrice(_ context.Context, key string, price float64) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	p := db.products[key]
	p.Price = price
	db.products[key] = p
	return nil
}

// Two nodes of one service cache products. One changes a price: first in
// the database, then every node's cache. The other serves the new price
// once the invalidation arrived; Sync waits for that.
func Example() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()
	db := &database{products: map[string]Product{"product:42": {Name: "teapot", Price: 9.99}}}
	// A topic of its own for each run, so the example never meets another
	// run's invalidations. In your code, the default serves.
	topic := "localcache-example:" + watermill.NewShortUUID()

	var nodes []*localcache.Cache[Product]
	for range 2 {
		cache, err := localcache.New(localcache.Config[Product]{Client: client, Topic: topic}, nil)
		if err != nil {
			panic(err)
		}
		defer cache.Close()
		nodes = append(nodes, cache)
	}
	a, b := nodes[0], nodes[1]
	load := func(ctx context.Context) (Product, error) { return db.Product(ctx, "product:42") }

	p, _ := b.GetOrLoad(ctx, "product:42", load) // loaded from the database
	fmt.Printf("node B: %s at %.2f\n", p.Name, p.Price)
	p, _ = b.GetOrLoad(ctx, "product:42", load) // from node B's cache
	fmt.Printf("node B: %s at %.2f (hits: %d)\n", p.Name, p.Price, b.Stats().Hits)

	// Node A changes the price: the database first, then the caches.
	if err := db.SetPrice(ctx, "product:42", 12.49); err != nil {
		panic(err)
	}
	if err := a.Invalidate(ctx, "product:42"); err != nil {
		panic(err)
	}

	// Node B gets the invalidation within a millisecond or so; Sync waits
	// for it.
	if err := b.Sync(ctx); err != nil {
		panic(err)
	}
	p, _ = b.GetOrLoad(ctx, "product:42", load)
	fmt.Printf("node B: %s at %.2f\n", p.Name, p.Price)
	// Output:
	// node B: teapot at 9.99
	// node B: teapot at 9.99 (hits: 1)
	// node B: teapot at 12.49
}

// Tags come from the value, after it is loaded: here each product is
// tagged with its category, so that a change to a category (a discount on
// all its products) invalidates every product in it, on every node,
// without knowing their keys.
func Example_tags() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()
	db := &database{products: map[string]Product{
		"product:1": {Name: "teapot", Category: "kitchen"},
		"product:2": {Name: "kettle", Category: "kitchen"},
		"product:3": {Name: "lamp", Category: "living"},
	}}
	cache, err := localcache.New(localcache.Config[Product]{
		Client: client,
		Topic:  "localcache-example:" + watermill.NewShortUUID(),
		Tags: func(_ string, p Product) []string {
			return []string{"category:" + p.Category}
		},
	}, nil)
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	for _, key := range []string{"product:1", "product:2", "product:3"} {
		_, err := cache.GetOrLoad(ctx, key, func(ctx context.Context) (Product, error) { return db.Product(ctx, key) })
		if err != nil {
			panic(err)
		}
	}
	fmt.Println("cached:", cache.Len())

	if err := cache.InvalidateTag(ctx, "category:kitchen"); err != nil {
		panic(err)
	}
	for _, key := range []string{"product:1", "product:2", "product:3"} {
		_, ok := cache.Get(key)
		fmt.Printf("%s cached: %v\n", key, ok)
	}
	// Output:
	// cached: 3
	// product:1 cached: false
	// product:2 cached: false
	// product:3 cached: true
}
