package redisbus_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Watermill's components/metrics works with redisbus as with any Pub/Sub:
// decorate the Router, and its series name each publisher and subscriber
// (publisher_name, subscriber_name) by its String, here with the consumer
// group.
func ExampleStreamsSubscriber_prometheusMetrics() {
	client := newRedisClient()
	defer client.Close()
	topic := "orders-" + watermill.NewUUID() // a fresh stream per run
	defer client.Del(context.Background(), topic)

	registry := prometheus.NewRegistry()
	metricsBuilder := metrics.NewPrometheusMetricsBuilder(registry, "", "")

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
	metricsBuilder.AddPrometheusRouterMetrics(router)
	handled := make(chan struct{}, 3)
	router.AddConsumerHandler("bill-orders", topic, subscriber, func(msg *message.Message) error {
		handled <- struct{}{}
		return nil
	})
	go func() { _ = router.Run(context.Background()) }()
	defer router.Close()
	<-router.Running()

	streamsPublisher, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer streamsPublisher.Close()
	publisher, err := metricsBuilder.DecoratePublisher(streamsPublisher) // outside a Router
	if err != nil {
		panic(err)
	}
	for range 3 {
		if err := publisher.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("order"))); err != nil {
			panic(err)
		}
	}
	for range 3 {
		<-handled
	}
	router.Close()

	// What Prometheus scrapes from the registry's handler. The metrics
	// count an ack as it happens, so wait until all three are counted.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(scrape(registry), `subscriber_name="redisbus.StreamsSubscriber(group=billing)"} 3`); {
		if time.Now().After(deadline) {
			panic("the acks were not counted:\n" + scrape(registry))
		}
		time.Sleep(time.Millisecond)
	}
	for _, line := range strings.Split(scrape(registry), "\n") {
		if strings.HasPrefix(line, "subscriber_messages_received_total{") || strings.HasPrefix(line, "publish_time_seconds_count{") {
			fmt.Println(line)
		}
	}
	// Output:
	// publish_time_seconds_count{handler_name="<no handler>",publisher_name="redisbus.StreamsPublisher",success="true"} 3
	// subscriber_messages_received_total{acked="acked",handler_name="bill-orders",subscriber_name="redisbus.StreamsSubscriber(group=billing)"} 3
}

// scrape returns what Prometheus would read from the registry's handler.
func scrape(registry *prometheus.Registry) string {
	response := httptest.NewRecorder()
	promhttp.HandlerFor(registry, promhttp.HandlerOpts{}).ServeHTTP(response, httptest.NewRequest("GET", "/metrics", nil))
	return response.Body.String()
}
