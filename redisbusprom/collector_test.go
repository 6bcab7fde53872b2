package redisbusprom_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/redisbusprom"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

const waitTimeout = 10 * time.Second

// gathered is a scrape, by series name and then labels ("k=v,k=v").
type gathered map[string]map[string]float64

func scrape(t *testing.T, registry *prometheus.Registry) gathered {
	t.Helper()
	families, err := registry.Gather()
	require.NoError(t, err)
	out := gathered{}
	for _, f := range families {
		out[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			out[f.GetName()][labels(m)] = value(m)
		}
	}
	return out
}

func labels(m *dto.Metric) string {
	s := ""
	for i, l := range m.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += l.GetName() + "=" + l.GetValue()
	}
	return s
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func newCollector(t *testing.T, config redisbusprom.Config) (*redisbusprom.Collector, *prometheus.Registry) {
	t.Helper()
	collector, err := redisbusprom.NewCollector(config)
	require.NoError(t, err)
	registry := prometheus.NewRegistry()
	require.NoError(t, registry.Register(collector))
	return collector, registry
}

// A consumer group's state as an operator asks for it: how long the stream
// is, how far behind each group is, what is pending with whom and for how
// long, what was dead-lettered, and the subscriber's own counters.
func TestCollectorReportsStreamsAndGroups(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	topic := pubsubtest.Topic(t)
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client, Trim: redisbus.StreamTrim{Unbounded: true}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ConsumerGroup: "billing", Consumer: "worker-0", MaxDeliveries: 1, MaxInFlight: 2,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	// A second group that has read nothing: its lag is the whole stream.
	require.NoError(t, client.XGroupCreateMkStream(t.Context(), topic, "audit", "0").Err())

	collector, registry := newCollector(t, redisbusprom.Config{Client: client, CacheFor: -1})
	require.NoError(t, collector.AddStreamsSubscriber("", sub))
	require.NoError(t, collector.AddStreamsPublisher("", pub))

	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	for _, payload := range []string{"poison", "ok", "held"} {
		require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(payload))))
	}
	poison := <-messages
	require.Equal(t, "poison", string(poison.Payload))
	poison.Nack() // MaxDeliveries 1: dead-lettered
	ok := <-messages
	ok.Ack()
	held := <-messages // kept unacked: pending with worker-0
	require.Equal(t, "held", string(held.Payload))
	require.Eventually(t, func() bool {
		s := sub.Stats()
		return s.DeadLettered == 1 && s.Acked == 1
	}, waitTimeout, time.Millisecond)
	require.Eventually(t, func() bool {
		return scrape(t, registry)["redisbus_stream_group_pending_entries"]["group=billing,stream="+topic] == 1
	}, waitTimeout, time.Millisecond, "the acks reach Redis")

	got := scrape(t, registry)
	stream := "stream=" + topic
	assert.Equal(t, 3.0, got["redisbus_stream_length_entries"][stream])
	assert.Equal(t, 1.0, got["redisbus_stream_dead_letter_entries"]["dead_letter_stream="+topic+":dead,"+stream])
	assert.Equal(t, 3.0, got["redisbus_stream_group_lag_entries"]["group=audit,"+stream])
	assert.Equal(t, 0.0, got["redisbus_stream_group_lag_entries"]["group=billing,"+stream])
	assert.Equal(t, 1.0, got["redisbus_stream_group_consumers"]["group=billing,"+stream])
	assert.Equal(t, 1.0, got["redisbus_stream_consumer_pending_entries"]["consumer=worker-0,group=billing,"+stream])
	assert.Positive(t, got["redisbus_stream_group_oldest_pending_age_seconds"]["group=billing,"+stream])
	assert.Equal(t, 0.0, got["redisbus_stream_group_oldest_pending_age_seconds"]["group=audit,"+stream])

	name := "name=redisbus.StreamsSubscriber(group=billing)"
	assert.Equal(t, 1.0, got["redisbus_streams_dead_lettered_entries_total"][name])
	assert.Equal(t, 1.0, got["redisbus_streams_acked_messages_total"][name])
	assert.Equal(t, 1.0, got["redisbus_streams_nacked_messages_total"][name])
	assert.Equal(t, 3.0, got["redisbus_streams_delivered_messages_total"][name])
	assert.Equal(t, 1.0, got["redisbus_streams_held_entries"][name])
	assert.Contains(t, got["redisbus_streams_trimmed_entries_total"], "name=redisbus.StreamsPublisher")
	assert.Equal(t, 0.0, got["redisbus_scrape_errors_total"][""])
	held.Ack()
}

// commandCounter counts the round trips a client makes for its callers.
type commandCounter struct{ roundTrips atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name != "hello" && name != "client" { // a new connection's handshake
			c.roundTrips.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if name := cmds[0].Name(); name != "hello" && name != "client" {
			c.roundTrips.Add(1)
		}
		return next(ctx, cmds)
	}
}

// A refresh costs two round trips however many streams are watched, and
// scrapes within CacheFor cost none.
func TestScrapesAreCheapAndCached(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	var streams []string
	for i := range 50 {
		stream := fmt.Sprintf("%s-%d", pubsubtest.Topic(t), i)
		streams = append(streams, stream)
		require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: stream, Values: []string{"payload", "x"}}).Err())
		require.NoError(t, client.XGroupCreate(t.Context(), stream, "g", "0").Err())
		require.NoError(t, client.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}}).Err())
	}
	counter := &commandCounter{}
	client.AddHook(counter)
	_, registry := newCollector(t, redisbusprom.Config{Client: client, Streams: streams, CacheFor: time.Hour})

	first := scrape(t, registry)
	assert.Len(t, first["redisbus_stream_group_pending_entries"], 50)
	assert.Equal(t, int64(2), counter.roundTrips.Load(), "one pipeline for lengths and groups, one for the pending entries")
	for range 10 {
		assert.Equal(t, first, scrape(t, registry))
	}
	assert.Equal(t, int64(2), counter.roundTrips.Load(), "scrapes within CacheFor read the cache")
}

// A Redis that does not answer costs a scrape at most ScrapeTimeout; the
// components' counters are reported all the same.
func TestScrapeWhenRedisDoesNotAnswer(t *testing.T) {
	proxy := pubsubtest.NewProxy(t, pubsubtest.Redis(t).Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr()}) // go-redis' defaults: 3 s timeouts, 3 retries
	t.Cleanup(func() { _ = client.Close() })
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: pubsubtest.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	collector, registry := newCollector(t, redisbusprom.Config{
		Client: client, Streams: []string{"orders"}, ScrapeTimeout: 100 * time.Millisecond,
	})
	require.NoError(t, collector.AddSubscriber("cache", sub))
	proxy.Blackhole()

	start := time.Now()
	got := scrape(t, registry)
	assert.Less(t, time.Since(start), 2*time.Second, "the scrape waits ScrapeTimeout, not the client's timeouts")
	assert.Equal(t, 1.0, got["redisbus_scrape_errors_total"][""])
	assert.Contains(t, got["redisbus_pubsub_received_messages_total"], "name=cache")
	assert.NotContains(t, got, "redisbus_stream_length_entries")
}

// A refresh that failed is not repeated before CacheFor: a Redis that is
// down is not asked again at every scrape.
func TestFailedRefreshIsCached(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := redis.NewClient(&redis.Options{Addr: server.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	counter := &commandCounter{}
	client.AddHook(counter)
	_, registry := newCollector(t, redisbusprom.Config{Client: client, Streams: []string{"orders"}, CacheFor: time.Hour})
	server.Kill(t)

	assert.Equal(t, 1.0, scrape(t, registry)["redisbus_scrape_errors_total"][""])
	tries := counter.roundTrips.Load()
	assert.Equal(t, 1.0, scrape(t, registry)["redisbus_scrape_errors_total"][""])
	assert.Equal(t, tries, counter.roundTrips.Load())
}

// Pub/Sub and wsroute counters, each component under its own name.
func TestCollectorReportsPubSubAndNodes(t *testing.T) {
	client := pubsubtest.NewClient(t)
	topic := pubsubtest.Topic(t)
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	frames := gochannel.NewGoChannel(gochannel.Config{}, nil)
	t.Cleanup(func() { _ = frames.Close() })
	node, err := wsroute.NewNode(wsroute.Config{Client: client, Prefix: topic + ":", Inbound: frames, InboundTopic: "frames"}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = node.Close() })

	collector, registry := newCollector(t, redisbusprom.Config{})
	require.NoError(t, collector.AddPublisher("", pub))
	require.NoError(t, collector.AddSubscriber("", sub))
	require.NoError(t, collector.AddNode("chat", node))
	assert.ErrorIs(t, collector.AddSubscriber("", sub), redisbusprom.ErrAlreadyAdded, "counted twice otherwise")
	other, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	assert.ErrorIs(t, collector.AddSubscriber("", other), redisbusprom.ErrNameTaken, "two subscribers, one name")
	require.NoError(t, collector.AddSubscriber("other", other))
	assert.Error(t, collector.AddPublisher("nil", nil))

	messages, err := sub.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("hi"))))
	(<-messages).Ack()
	_, err = node.SendToClient(t.Context(), "nobody", []byte("hi"))
	require.NoError(t, err)

	got := scrape(t, registry)
	assert.Equal(t, 1.0, got["redisbus_pubsub_received_messages_total"]["name=redisbus.Subscriber"])
	assert.Equal(t, 1.0, got["redisbus_pubsub_acked_messages_total"]["name=redisbus.Subscriber"])
	assert.Equal(t, 0.0, got["redisbus_pubsub_async_failed_messages_total"]["name=redisbus.Publisher"])
	assert.Equal(t, 1.0, got["redisbus_wsroute_offline_messages_total"]["name=chat"])
	assert.NotContains(t, got, "redisbus_scrape_errors_total", "no Client: no stream views")

	collector.Remove("chat")
	assert.NotContains(t, scrape(t, registry), "redisbus_wsroute_offline_messages_total")
}

// Each of a node's limits is its own series: a connection over
// MaxConnectionsPerClient, one over InboundRate, one answering no pings.
func TestCollectorReportsNodeLimits(t *testing.T) {
	client := pubsubtest.NewClient(t)
	frames := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16}, nil)
	t.Cleanup(func() { _ = frames.Close() })
	inbound, err := frames.Subscribe(t.Context(), "frames")
	require.NoError(t, err)
	node, err := wsroute.NewNode(wsroute.Config{
		Client: client, Prefix: pubsubtest.Topic(t) + ":", Inbound: frames, InboundTopic: "frames",
		MaxConnectionsPerClient: 1, InboundRate: 0.001, InboundBurst: 1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = node.Close() })
	handler, err := node.Handler(wsroute.HandlerConfig{
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("client"), nil },
		PingInterval: 50 * time.Millisecond, PongTimeout: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	dial := func(clientID string, options *websocket.DialOptions) *websocket.Conn {
		ws, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(server.URL, "http")+"?client="+clientID, options)
		require.NoError(t, err)
		t.Cleanup(func() { _ = ws.CloseNow() })
		return ws
	}
	closedWith := func(ws *websocket.Conn) websocket.StatusCode {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return websocket.CloseStatus(err)
			}
		}
	}
	bob := dial("bob", nil)
	require.NoError(t, bob.Write(t.Context(), websocket.MessageText, []byte("hello"))) // read once registered
	(<-inbound).Ack()
	assert.Equal(t, wsroute.StatusTooManyConnections, closedWith(dial("bob", nil)))
	require.NoError(t, bob.Write(t.Context(), websocket.MessageText, []byte("over the rate")))
	assert.Equal(t, wsroute.StatusRateLimited, closedWith(bob))
	noPongs := &websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool { return false }}
	assert.Equal(t, wsroute.StatusPingTimeout, closedWith(dial("carol", noPongs)))

	collector, registry := newCollector(t, redisbusprom.Config{})
	require.NoError(t, collector.AddNode("chat", node))
	got := scrape(t, registry)
	for _, series := range []string{
		"redisbus_wsroute_too_many_connections_total",
		"redisbus_wsroute_rate_limited_clients_total",
		"redisbus_wsroute_ping_timeouts_total",
	} {
		assert.Equal(t, 1.0, got[series]["name=chat"], series)
	}
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	_, err := redisbusprom.NewCollector(redisbusprom.Config{MaxStreams: -1})
	var configErr *redisbus.ConfigError
	require.ErrorAs(t, err, &configErr)
	assert.Equal(t, "redisbusprom.Config.MaxStreams", configErr.Field)
}

// A stream that does not exist has no length (0 would read as empty); one
// whose key holds something else is left out and logged; the scrape says
// it carries stream views.
func TestMissingAndWrongTypeStreams(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	require.NoError(t, client.Set(t.Context(), "config", "x", 0).Err())
	require.NoError(t, client.XAdd(t.Context(), &redis.XAddArgs{Stream: "empty", Values: []string{"payload", "x"}}).Err())
	require.NoError(t, client.XTrimMaxLen(t.Context(), "empty", 0).Err())
	logger := pubsubtest.NewRecordingLogger()
	_, registry := newCollector(t, redisbusprom.Config{Client: client, Streams: []string{"missing", "config", "empty"}, Logger: logger, CacheFor: -1})

	scrape(t, registry)
	got := scrape(t, registry)
	assert.Equal(t, map[string]float64{"stream=empty": 0}, got["redisbus_stream_length_entries"])
	assert.Equal(t, 1.0, got["redisbus_scrape_success"][""])
	assert.Len(t, logger.Find(watermill.ErrorLogLevel, "is not a stream"), 1, "the key of another type is logged once")
}

// Two collectors (two Redis deployments, say) share a registry when each
// is wrapped with a label of its own.
func TestTwoCollectorsInOneRegistry(t *testing.T) {
	registry := prometheus.NewRegistry()
	for _, deployment := range []string{"orders", "chat"} {
		collector, err := redisbusprom.NewCollector(redisbusprom.Config{Client: pubsubtest.NewClient(t), Streams: []string{deployment}})
		require.NoError(t, err)
		require.NoError(t, prometheus.WrapRegistererWith(prometheus.Labels{"redis": deployment}, registry).Register(collector))
	}
	got := scrape(t, registry)
	assert.Len(t, got["redisbus_scrape_success"], 2)
}
