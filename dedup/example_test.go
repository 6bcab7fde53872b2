package dedup_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// newRedisClient connects the example to the tests' Redis. In your code:
// redis.NewClient(&redis.Options{Addr: "localhost:6379"}).
func newRedisClient() *redis.Client {
	client, err := pubsubtest.SharedClient()
	if err != nil {
		panic(err)
	}
	return client
}

// Both sides of a work queue: the publisher stores each order once however
// often its Publish is retried, and the workers, behind the Middleware,
// handle each order once even when a producer without the guard sends it
// twice.
func Example() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()
	// Keys of its own for each run, so the example starts empty.
	run := "dedup-example:" + watermill.NewShortUUID()
	topic := run + ":orders"
	config := dedup.Config{Client: client, Prefix: run + ":dedup:"}

	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer streams.Close()
	publisher, err := dedup.NewPublisher(streams, config, nil)
	if err != nil {
		panic(err)
	}
	order := message.NewMessage(watermill.NewUUID(), []byte("order 1"))
	for range 2 { // the second Publish is a retry, as after a timeout
		if err := publisher.Publish(topic, order); err != nil {
			panic(err)
		}
	}
	fmt.Println("orders in the stream:", client.XLen(ctx, topic).Val())

	// A producer without the guard sends order 2 twice.
	again := message.NewMessage(watermill.NewUUID(), []byte("order 2"))
	for range 2 {
		if err := streams.Publish(topic, again); err != nil {
			panic(err)
		}
	}

	dedupMiddleware, err := dedup.NewMiddleware(config, nil)
	if err != nil {
		panic(err)
	}
	subscriber, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "billing",
	}, nil)
	if err != nil {
		panic(err)
	}
	defer subscriber.Close()
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		panic(err)
	}
	router.AddMiddleware(dedupMiddleware.Middleware)
	charged := make(chan string, 3)
	router.AddConsumerHandler("charge", topic, subscriber, func(msg *message.Message) error {
		charged <- string(msg.Payload)
		return nil
	})
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	<-router.Running()

	fmt.Println("charged", <-charged)
	fmt.Println("charged", <-charged)
	for dedupMiddleware.Stats().Duplicates == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("copies dropped:", dedupMiddleware.Stats().Duplicates)
	cleanUp(client, run)
	// Output:
	// orders in the stream: 1
	// charged order 1
	// charged order 2
	// copies dropped: 1
}

// Commit makes a side effect in Redis and the mark that the message was
// handled one transaction: a worker killed at any point leaves both or
// neither, and each order adds to the revenue once.
func ExampleMiddleware_Commit() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()
	run := "dedup-example:" + watermill.NewShortUUID()
	topic, revenue := run+":orders", run+":revenue"
	dedupMiddleware, err := dedup.NewMiddleware(dedup.Config{Client: client, Prefix: run + ":dedup:"}, nil)
	if err != nil {
		panic(err)
	}
	subscriber, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "billing",
	}, nil)
	if err != nil {
		panic(err)
	}
	defer subscriber.Close()
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		panic(err)
	}
	router.AddMiddleware(dedupMiddleware.Middleware)
	router.AddConsumerHandler("add-revenue", topic, subscriber, func(msg *message.Message) error {
		// On Redis Cluster, give revenue and Prefix one hash tag.
		return dedupMiddleware.Commit(msg.Context(), msg, func(pipe redis.Pipeliner) error {
			pipe.IncrByFloat(msg.Context(), revenue, 19.99)
			return nil
		})
	})
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	<-router.Running()

	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer streams.Close()
	order := message.NewMessage(watermill.NewUUID(), []byte("order 1"))
	for range 3 { // the order arrives three times
		if err := streams.Publish(topic, order); err != nil {
			panic(err)
		}
	}
	for stats := dedupMiddleware.Stats(); stats.Committed+stats.Duplicates < 3; stats = dedupMiddleware.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("revenue:", client.Get(ctx, revenue).Val())
	cleanUp(client, run)
	// Output:
	// revenue: 19.99
}

// Watermill's Deduplicator with a Repository: its duplicates are dropped
// across processes. It marks a message before the handler runs, so a
// message whose handler fails is not handled when it comes again; use
// Middleware unless that is what you want.
func ExampleRepository() {
	client := newRedisClient()
	defer client.Close()
	run := "dedup-example:" + watermill.NewShortUUID()
	repository, err := dedup.NewRepository(dedup.Config{Client: client, Prefix: run + ":", Window: time.Hour})
	if err != nil {
		panic(err)
	}
	deduplicator := &middleware.Deduplicator{KeyFactory: dedup.UUID, Repository: repository}
	handle := deduplicator.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		fmt.Println("handled", string(msg.Payload))
		return nil, nil
	})
	order := message.NewMessage(watermill.NewUUID(), []byte("order 1"))
	for range 2 {
		if _, err := handle(order.Copy()); err != nil {
			panic(err)
		}
	}
	fmt.Printf("%+v\n", repository.Stats())
	cleanUp(client, run)
	// Output:
	// handled order 1
	// {Checks:2 Duplicates:1 Errors:0}
}

// cleanUp deletes the keys an example made.
func cleanUp(client *redis.Client, run string) {
	ctx := context.Background()
	keys, _ := client.Keys(ctx, run+":*").Result()
	keys = append(keys, "{"+run+":orders}:*")
	more, _ := client.Keys(ctx, "{"+run+":orders}:*").Result()
	_ = client.Del(ctx, append(keys, more...)...).Err()
}
