package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// invalidationTopic carries the keys of records that changed.
const invalidationTopic = "cache:invalidate"

// Node is one application server: it reads records from Redis (the shared
// store) through a local, in-memory L1 cache, and evicts a cached record
// when any node says it changed.
type Node struct {
	Name string
	// onEvict, if set, is called after an invalidation from another node
	// was applied.
	onEvict func(n *Node, key string)

	store      *redis.Client
	publisher  *redisbus.Publisher
	subscriber *redisbus.Subscriber
	router     *message.Router

	mu    sync.Mutex
	cache map[string]string
	hits  int
}

// StartNode starts a node and returns once it listens for invalidations.
// onEvict, if not nil, is called after each invalidation from another node
// was applied.
func StartNode(ctx context.Context, name string, opt *redis.Options, onEvict func(n *Node, key string)) (*Node, error) {
	n := &Node{Name: name, onEvict: onEvict, store: redis.NewClient(opt), cache: map[string]string{}}
	var err error
	if n.publisher, err = redisbus.NewPublisher(redisbus.PublisherConfig{Client: n.store}, nil); err != nil {
		return nil, err
	}
	if n.subscriber, err = redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: n.store}, nil); err != nil {
		return nil, err
	}
	if n.router, err = message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, watermill.NopLogger{}); err != nil {
		return nil, err
	}
	n.router.AddConsumerHandler("evict", invalidationTopic, n.subscriber, n.evict)
	// Run fails when a subscription does (Redis unreachable, refused):
	// wait for that too, not only for Running, which then never comes.
	runErr := make(chan error, 1)
	go func() { runErr <- n.router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-n.router.Running():
		return n, nil
	case err := <-runErr:
		n.Close()
		return nil, fmt.Errorf("cannot start: %w", err)
	case <-ctx.Done():
		n.Close()
		return nil, ctx.Err()
	}
}

// Get returns a record, from the L1 cache when it holds it.
func (n *Node) Get(ctx context.Context, key string) (string, error) {
	n.mu.Lock()
	value, ok := n.cache[key]
	if ok {
		n.hits++
	}
	n.mu.Unlock()
	if ok {
		return value, nil
	}
	value, err := n.store.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	n.cache[key] = value
	n.mu.Unlock()
	return value, nil
}

// Set writes a record and tells every other node to drop its copy.
func (n *Node) Set(ctx context.Context, key, value string) error {
	if err := n.store.Set(ctx, key, value, 0).Err(); err != nil {
		return err
	}
	n.mu.Lock()
	n.cache[key] = value
	n.mu.Unlock()

	msg := message.NewMessageWithContext(ctx, watermill.NewUUID(), []byte(key))
	msg.Metadata.Set("origin", n.Name)
	return n.publisher.Publish(invalidationTopic, msg)
}

// Cached reports whether the L1 cache holds key.
func (n *Node) Cached(key string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.cache[key]
	return ok
}

func (n *Node) evict(msg *message.Message) error {
	if msg.Metadata.Get("origin") == n.Name {
		return nil // our own write: the cache is already current
	}
	key := string(msg.Payload)
	n.mu.Lock()
	delete(n.cache, key)
	n.mu.Unlock()
	if n.onEvict != nil {
		n.onEvict(n, key)
	}
	return nil
}

// Close stops the node.
func (n *Node) Close() {
	_ = n.router.Close()
	_ = n.subscriber.Close()
	_ = n.publisher.Close()
	_ = n.store.Close()
}
