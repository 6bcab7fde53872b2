package redisbus_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
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

// The three steps of a best-effort Pub/Sub: a Redis client, a handler
// subscribed at start-up on every node, and a publish from anywhere.
func Example() {
	// Step 1: a Redis client, shared by the publisher and the subscriber.
	client := newRedisClient()
	defer client.Close()

	// Step 2: subscribe at boot. Every node that runs this receives every
	// message published afterwards.
	subscriber, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		panic(err)
	}
	received := make(chan struct{})
	router.AddConsumerHandler("greeter", "hello:world", subscriber, func(msg *message.Message) error {
		fmt.Printf("[hello:world] received: %s\n", msg.Payload)
		close(received)
		return nil
	})
	go func() { _ = router.Run(context.Background()) }()
	defer router.Close()
	<-router.Running()

	// Step 3: publish from anywhere: a handler, a timer, a CLI.
	publisher, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer publisher.Close()
	msg := message.NewMessage(watermill.NewUUID(), []byte("hi from anywhere"))
	if err := publisher.Publish("hello:world", msg); err != nil {
		panic(err)
	}

	select {
	case <-received:
	case <-time.After(5 * time.Second):
		fmt.Println("nothing received")
	}
	// Output: [hello:world] received: hi from anywhere
}

// A Subscriber used without a Router: Subscribe returns a channel, and
// each message must be acked before the channel delivers the next. A plain
// PUBLISH, as a PHP or Python service or redis-cli would send it, arrives as
// a message whose payload is the published string.
func ExampleSubscriber() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()

	subscriber, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer subscriber.Close()
	// Subscribe returns once Redis has confirmed the subscription: whatever
	// is published from now on is received.
	messages, err := subscriber.Subscribe(ctx, "prices:eur")
	if err != nil {
		panic(err)
	}

	// Another service, not using Watermill: PUBLISH prices:eur 1.0842
	if err := client.Publish(ctx, "prices:eur", "1.0842").Err(); err != nil {
		panic(err)
	}

	msg := <-messages
	fmt.Printf("received %s\n", msg.Payload)
	msg.Ack()
	// Output: received 1.0842
}

// PublishCount tells a publisher whether anybody was listening.
func ExamplePublisher_PublishCount() {
	client := newRedisClient()
	defer client.Close()
	publisher, _ := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
	defer publisher.Close()
	topic := "presence:" + watermill.NewShortUUID()

	n, _ := publisher.PublishCount(context.Background(), topic, message.NewMessage(watermill.NewUUID(), nil))
	fmt.Println("receivers before anyone subscribed:", n)

	subscriber, _ := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	defer subscriber.Close()
	_ = subscriber.SubscribeInitialize(topic)

	n, _ = publisher.PublishCount(context.Background(), topic, message.NewMessage(watermill.NewUUID(), nil))
	fmt.Println("receivers after:", n)
	// Output:
	// receivers before anyone subscribed: 0
	// receivers after: 1
}

// The envelope is simple enough to write from any language; see README.md.
func ExampleEnvelopeMarshaler() {
	msg := message.NewMessage("u1", []byte("hello"))
	msg.Metadata.Set("k", "v")
	data, _ := redisbus.EnvelopeMarshaler{}.Marshal("topic", msg)
	fmt.Printf("% x\n", data)

	// A payload that is not an envelope arrives as it is.
	raw, _ := redisbus.EnvelopeMarshaler{}.Unmarshal("topic", []byte("hi from PHP"))
	fmt.Printf("%s\n", raw.Payload)
	// Output:
	// c1 52 42 01 00 00 00 02 75 31 00 00 00 01 00 00 00 01 6b 00 00 00 01 76 68 65 6c 6c 6f
	// hi from PHP
}

// An asynchronous publisher never makes its caller wait for Redis: Publish
// returns once the message is queued, and failures are reported instead of
// returned.
func ExamplePublisherConfig_async() {
	client := newRedisClient()
	defer client.Close()

	subscriber, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer subscriber.Close()
	invalidations, err := subscriber.Subscribe(context.Background(), "cache:invalidate")
	if err != nil {
		panic(err)
	}

	publisher, err := redisbus.NewPublisher(redisbus.PublisherConfig{
		Client: client,
		Async:  true,
		OnAsyncError: func(topic string, messages int, err error) {
			fmt.Printf("%d invalidations for %s were lost: %v\n", messages, topic, err)
		},
	}, nil)
	if err != nil {
		panic(err)
	}
	defer publisher.Close()

	// In a request handler: returns without a round trip.
	if err := publisher.Publish("cache:invalidate", message.NewMessage(watermill.NewUUID(), []byte("user:42"))); err != nil {
		panic(err) // only an invalid message, a full queue or a closed publisher
	}

	msg := <-invalidations
	msg.Ack()
	fmt.Printf("evict %s\n", msg.Payload)
	// Output: evict user:42
}
