package main

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/localcache"
)

// invalidationTopic carries the invalidations of the records' caches.
const invalidationTopic = "cache:invalidate"

// Node is one application server: it reads records from Redis (standing in
// for the database) through a local, in-memory cache, kept consistent with
// the other nodes' by localcache. A node whose connection to Redis drops
// stops serving from its cache until it is back, and then starts afresh,
// since it may have missed invalidations meanwhile.
type Node struct {
	Name  string
	store *redis.Client
	cache *localcache.Cache[string]
}

// StartNode starts a node and returns once it listens for invalidations.
func StartNode(ctx context.Context, name string, opt *redis.Options) (*Node, error) {
	store := redis.NewClient(opt)
	cache, err := localcache.New(localcache.Config[string]{Client: store, Topic: invalidationTopic}, nil)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	return &Node{Name: name, store: store, cache: cache}, nil
}

// Get returns a record, from the cache when it holds it, otherwise from
// the store, and then caches it, unless a write of the record was
// announced while it was being read.
func (n *Node) Get(ctx context.Context, key string) (string, error) {
	return n.cache.GetOrLoad(ctx, key, func(ctx context.Context) (string, error) {
		value, err := n.store.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			return "", nil
		}
		return value, err
	})
}

// Set writes a record, then has every node drop its copy, this one
// included: the next Get reads the record again. The node does not cache
// what it wrote, since another node may write after it.
func (n *Node) Set(ctx context.Context, key, value string) error {
	if err := n.store.Set(ctx, key, value, 0).Err(); err != nil {
		return err
	}
	return n.cache.Invalidate(ctx, key)
}

// Cached reports whether the node's cache holds key.
func (n *Node) Cached(key string) bool {
	_, ok := n.cache.Get(key)
	return ok
}

// Sync returns once the node applied every invalidation published before
// the call, by any node.
func (n *Node) Sync(ctx context.Context) error { return n.cache.Sync(ctx) }

// Close stops the node.
func (n *Node) Close() {
	_ = n.cache.Close()
	_ = n.store.Close()
}
