package redisbusprom_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/redisbusprom"
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

// A worker exports its consumer group's state and its own counters on
// /metrics, beside Watermill's and Go's series.
func ExampleCollector() {
	client := newRedisClient()
	defer client.Close()
	topic := "invoices-" + watermill.NewUUID() // a fresh stream per run
	defer client.Del(context.Background(), topic)

	subscriber, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "mailer",
		ReadAhead: -1, // read only what the handler takes: the example's numbers stay the same
	}, nil)
	if err != nil {
		panic(err)
	}
	defer subscriber.Close()
	publisher, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer publisher.Close()

	// The collector: Client reads the streams' state at scrape time.
	collector, err := redisbusprom.NewCollector(redisbusprom.Config{Client: client})
	if err != nil {
		panic(err)
	}
	if err := collector.AddStreamsSubscriber("", subscriber); err != nil { // named by its String
		panic(err)
	}
	registry := prometheus.NewRegistry() // or prometheus.MustRegister, for the default one
	registry.MustRegister(collector)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))

	messages, err := subscriber.Subscribe(context.Background(), topic)
	if err != nil {
		panic(err)
	}
	for range 2 {
		if err := publisher.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("invoice"))); err != nil {
			panic(err)
		}
	}
	first := <-messages // the second stays in the stream, unread
	_ = first           // in the handler's hands: pending, not acked

	// What Prometheus reads from /metrics.
	scrape := httptest.NewRecorder()
	mux.ServeHTTP(scrape, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(scrape.Body.String(), "\n") {
		for _, series := range []string{"redisbus_stream_length_entries", "redisbus_stream_group_lag_entries",
			"redisbus_stream_group_pending_entries", "redisbus_streams_read_entries_total"} {
			if strings.HasPrefix(line, series+"{") {
				fmt.Println(strings.ReplaceAll(line, topic, "invoices"))
			}
		}
	}
	first.Ack()
	// Output:
	// redisbus_stream_group_lag_entries{group="mailer",stream="invoices"} 1
	// redisbus_stream_group_pending_entries{group="mailer",stream="invoices"} 1
	// redisbus_stream_length_entries{stream="invoices"} 2
	// redisbus_streams_read_entries_total{name="redisbus.StreamsSubscriber(group=mailer)"} 1
}
