package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// A worker pool over a stream: every process of a service runs a
// StreamsSubscriber in the same consumer group, and each order goes to one
// of them. A handler error nacks the order, which is delivered again; after
// MaxDeliveries failures it is moved to the dead-letter stream, where it can
// be inspected or replayed.
func ExampleStreamsSubscriber() {
	client := newRedisClient()
	defer client.Close()
	ctx := context.Background()
	// A stream of its own for each run, so the example starts empty.
	topic := "orders:" + watermill.NewShortUUID()

	// Two workers, as two processes would run them. Each leases its own
	// consumer name (the host name, then host-2, …).
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		panic(err)
	}
	processed := make(chan string)
	for i := range 2 {
		worker, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
			Client:        client,
			ConsumerGroup: "order-processors",
			MaxDeliveries: 3,
		}, nil)
		if err != nil {
			panic(err)
		}
		defer worker.Close()
		router.AddConsumerHandler(fmt.Sprintf("worker-%d", i), topic, worker, func(msg *message.Message) error {
			if strings.Contains(string(msg.Payload), "malformed") {
				return errors.New("cannot parse the order") // nacked: delivered again
			}
			processed <- string(msg.Payload)
			return nil // acked
		})
	}
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	<-router.Running()

	// The dead letters of the topic, read from the beginning of their stream.
	deadLetters, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client:  client,
		StartID: "0",
	}, nil)
	if err != nil {
		panic(err)
	}
	defer deadLetters.Close()
	dead, err := deadLetters.Subscribe(ctx, topic+":dead")
	if err != nil {
		panic(err)
	}

	publisher, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer publisher.Close()
	for _, order := range []string{"order 1", "order 2 (malformed)", "order 3", "order 4"} {
		if err := publisher.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(order))); err != nil {
			panic(err)
		}
	}

	// The workers share the orders, so they finish in any order.
	var done []string
	for range 3 {
		done = append(done, <-processed)
	}
	slices.Sort(done)
	fmt.Println("processed:", strings.Join(done, ", "))

	letter := <-dead
	letter.Ack()
	fmt.Printf("dead letter: %s\n", letter.Payload)
	fmt.Println("reason:", letter.Metadata.Get(redisbus.DeadLetterFieldReason))
	// Output:
	// processed: order 1, order 3, order 4
	// dead letter: order 2 (malformed)
	// reason: nacked 3 times (MaxDeliveries 3)
}
