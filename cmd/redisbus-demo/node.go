package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redisbus/watermill-redisbus/redisbusprom"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "embed"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/internal/listenurl"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

//go:embed page.html
var page []byte

// Topics of the demo.
const (
	framesTopic   = "frames"          // in-process: frames from this node's clients
	eventsTopic   = "demo:events"     // best-effort Pub/Sub: every node logs every event
	ordersTopic   = "demo:orders"     // Streams: one node of the group processes each order
	ordersGroup   = "demo-processors" // the consumer group of all nodes
	greetingTopic = "demo:greetings"  // the start-up check that both nodes hear each other
)

// nodeConfig configures one demo node.
type nodeConfig struct {
	Name    string
	Addr    string // listen address; port 0 picks a free one
	Redis   *redis.Options
	NodeTTL time.Duration
	Out     io.Writer // where the node narrates what crosses it
}

// node is one demo server: a wsroute node with its WebSocket endpoint and
// page, a Router that handles its clients' frames, and the Pub/Sub and
// Streams sides of the demo.
type node struct {
	name   string
	url    string
	client *redis.Client
	route  *wsroute.Node
	router *message.Router
	server *http.Server

	publisher        *redisbus.Publisher
	subscriber       *redisbus.Subscriber
	streamsPublisher *redisbus.StreamsPublisher
	streamsSub       *redisbus.StreamsSubscriber
	frames           *gochannel.GoChannel

	printMu *sync.Mutex
	out     io.Writer
	greeted chan string // who greeted, during the start-up check
	ready   atomic.Bool // the start-up check passed: narrate greetings
	logMu   sync.Mutex
	log     []logEntry // what reached this node over Pub/Sub and Streams
}

type logEntry struct {
	At     time.Time `json:"at"`
	Source string    `json:"source"` // "pubsub" or "streams"
	Text   string    `json:"text"`
	From   string    `json:"from"`
}

// frame is what clients send.
type frame struct {
	Op   string `json:"op"` // whoami, send, join, leave, room, all, publish, publish_reliable
	To   string `json:"to,omitempty"`
	Room string `json:"room,omitempty"`
	Text string `json:"text,omitempty"`
}

// reply is what clients receive.
type reply struct {
	Kind   string `json:"kind"` // direct, room, all, sent, info, error
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Room   string `json:"room,omitempty"`
	Text   string `json:"text,omitempty"`
	Node   string `json:"node,omitempty"` // the node the sender is on
	Status string `json:"status,omitempty"`
}

func startNode(ctx context.Context, config nodeConfig, printMu *sync.Mutex) (_ *node, err error) {
	n := &node{name: config.Name, client: redis.NewClient(config.Redis), printMu: printMu, out: config.Out, greeted: make(chan string, 16)}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	logger := watermill.NopLogger{}
	// Publish returns once the handler acked the frame, so frames of one
	// connection are handled in the order they came: what a client sends
	// to another arrives in order.
	n.frames = gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, logger)
	if n.publisher, err = redisbus.NewPublisher(redisbus.PublisherConfig{Client: n.client}, logger); err != nil {
		return nil, err
	}
	if n.subscriber, err = redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: n.client}, logger); err != nil {
		return nil, err
	}
	if n.streamsPublisher, err = redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: n.client}, logger); err != nil {
		return nil, err
	}
	if n.streamsSub, err = redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: n.client, ConsumerGroup: ordersGroup, Consumer: config.Name,
	}, logger); err != nil {
		return nil, err
	}
	if n.route, err = wsroute.NewNode(wsroute.Config{
		Client:       n.client,
		NodeID:       config.Name,
		NodeTTL:      config.NodeTTL,
		Inbound:      n.frames,
		InboundTopic: framesTopic,
	}, logger); err != nil {
		return nil, err
	}
	// Subscribe before anything is published: Pub/Sub delivers only to
	// subscribers connected at the time.
	for _, topic := range []string{eventsTopic, greetingTopic} {
		if err := n.subscriber.SubscribeInitialize(topic); err != nil {
			return nil, err
		}
	}

	if n.router, err = message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, logger); err != nil {
		return nil, err
	}
	// Frames from this node's clients are handled here; what the handler
	// addresses to clients or rooms is routed by wsroute.Deliver.
	n.router.AddHandler("frames", framesTopic, n.frames, "demo:audit", n.publisher, n.route.Deliver(n.handleFrame))
	n.router.AddConsumerHandler("events", eventsTopic, n.subscriber, n.handleEvent("pubsub"))
	n.router.AddConsumerHandler("orders", ordersTopic, n.streamsSub, n.handleEvent("streams"))
	n.router.AddConsumerHandler("greetings", greetingTopic, n.subscriber, n.handleGreeting)
	registry, err := n.metrics()
	if err != nil {
		return nil, err
	}
	go func() { _ = n.router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-n.router.Running():
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	handler, err := n.route.Handler(wsroute.HandlerConfig{
		// Demo only: the client names itself. A real application takes the
		// ID from its session cookie or token.
		Authenticate: func(r *http.Request) (string, error) {
			if id := r.URL.Query().Get("client"); id != "" {
				return id, nil
			}
			return "", errors.New("no client id")
		},
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", handler)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("/log", n.serveLog)
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"node": n.name, "wsroute": n.route.Stats(), "subscriber": n.subscriber.Stats(), "streams": n.streamsSub.Stats()})
	})
	listener, err := net.Listen("tcp", config.Addr)
	if err != nil {
		return nil, err
	}
	n.url = listenurl.HTTP(config.Addr, listener.Addr())
	n.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = n.server.Serve(listener) }()
	return n, nil
}

// metrics makes the node's Prometheus registry: Watermill's metrics of
// its Router (handlers, publishers, subscribers) and redisbus' own (its
// components' counters, the orders stream and its group). Each node has a
// registry of its own, as each would be a process of its own.
func (n *node) metrics() (*prometheus.Registry, error) {
	registry := prometheus.NewRegistry()
	metrics.NewPrometheusMetricsBuilder(registry, "", "").AddPrometheusRouterMetrics(n.router)
	collector, err := redisbusprom.NewCollector(redisbusprom.Config{Client: n.client, CacheFor: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	for _, err := range []error{
		collector.AddPublisher("", n.publisher),
		collector.AddSubscriber("", n.subscriber),
		collector.AddStreamsPublisher("", n.streamsPublisher),
		collector.AddStreamsSubscriber("", n.streamsSub),
		collector.AddNode("", n.route),
	} {
		if err != nil {
			return nil, err
		}
	}
	return registry, registry.Register(collector)
}

// handleFrame turns a client's frame into what it asks for. Replies and
// messages for other clients are returned addressed (wsroute metadata);
// the rest goes to demo:audit.
func (n *node) handleFrame(msg *message.Message) ([]*message.Message, error) {
	from := msg.Metadata.Get(wsroute.MetadataFrom)
	var f frame
	if err := json.Unmarshal(msg.Payload, &f); err != nil {
		return []*message.Message{n.toClient(from, reply{Kind: "error", Text: "frames are JSON: " + err.Error()})}, nil
	}
	ctx := msg.Context()
	switch f.Op {
	case "whoami":
		return []*message.Message{n.toClient(from, reply{Kind: "info", Text: "you are " + from + " on " + n.name, Node: n.name})}, nil
	case "send":
		result, err := n.route.SendToClient(ctx, f.To, mustJSON(reply{Kind: "direct", From: from, Text: f.Text, Node: n.name}))
		if err != nil {
			return nil, err
		}
		n.printf("%s: %s -> %s (%s, %d node(s)): %s\n", n.name, from, f.To, result.Status, result.Nodes, f.Text)
		return []*message.Message{n.toClient(from, reply{Kind: "sent", To: f.To, Status: result.Status.String()})}, nil
	case "join", "leave":
		join := f.Op == "join"
		err := n.route.Leave(ctx, from, f.Room)
		if join {
			err = n.route.Join(ctx, from, f.Room)
		}
		if err != nil {
			return []*message.Message{n.toClient(from, reply{Kind: "error", Text: err.Error()})}, nil
		}
		return []*message.Message{n.toClient(from, reply{Kind: "info", Room: f.Room, Text: f.Op + "ed " + f.Room})}, nil
	case "room":
		out := message.NewMessage(watermill.NewUUID(), mustJSON(reply{Kind: "room", From: from, Room: f.Room, Text: f.Text, Node: n.name}))
		out.Metadata.Set(wsroute.MetadataToRoom, f.Room)
		return []*message.Message{out}, nil
	case "all":
		out := message.NewMessage(watermill.NewUUID(), mustJSON(reply{Kind: "all", From: from, Text: f.Text, Node: n.name}))
		out.Metadata.Set(wsroute.MetadataToAll, "true")
		return []*message.Message{out}, nil
	case "publish":
		event := message.NewMessage(watermill.NewUUID(), []byte(f.Text))
		event.Metadata.Set("from", from+"@"+n.name)
		receivers, err := n.publisher.PublishCount(ctx, eventsTopic, event)
		if err != nil {
			return nil, err
		}
		return []*message.Message{n.toClient(from, reply{Kind: "info", Text: fmt.Sprintf("published to %d node(s)", receivers)})}, nil
	case "publish_reliable":
		order := message.NewMessage(watermill.NewUUID(), []byte(f.Text))
		order.Metadata.Set("from", from+"@"+n.name)
		ids, err := n.streamsPublisher.PublishIDs(ctx, ordersTopic, order)
		if err != nil {
			return nil, err
		}
		return []*message.Message{n.toClient(from, reply{Kind: "info", Text: "stored as stream entry " + ids[0]})}, nil
	}
	return []*message.Message{n.toClient(from, reply{Kind: "error", Text: "unknown op " + f.Op})}, nil
}

func (n *node) toClient(clientID string, r reply) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), mustJSON(r))
	msg.Metadata.Set(wsroute.MetadataToClient, clientID)
	return msg
}

// handleEvent logs what reached this node over Pub/Sub or Streams.
func (n *node) handleEvent(source string) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		entry := logEntry{At: time.Now(), Source: source, Text: string(msg.Payload), From: msg.Metadata.Get("from")}
		n.logMu.Lock()
		n.log = append(n.log, entry)
		if len(n.log) > 100 {
			n.log = n.log[len(n.log)-100:]
		}
		n.logMu.Unlock()
		n.printf("%s received over %s from %s: %s\n", n.name, source, entry.From, entry.Text)
		return nil
	}
}

func (n *node) serveLog(w http.ResponseWriter, _ *http.Request) {
	n.logMu.Lock()
	entries := append([]logEntry{}, n.log...)
	n.logMu.Unlock()
	writeJSON(w, map[string]any{"node": n.name, "log": entries})
}

// foreignProducer is who sends a greeting without Watermill metadata.
const foreignProducer = "a non-Watermill producer"

// handleGreeting hands greetings (from any node, this one included, and
// from any program that PUBLISHes to the topic) to the start-up check, and
// once it passed narrates those of other nodes starting.
func (n *node) handleGreeting(msg *message.Message) error {
	from := msg.Metadata.Get("from")
	if from == "" {
		from = foreignProducer
	}
	if !n.ready.Load() {
		select {
		case n.greeted <- from:
		default:
		}
		return nil
	}
	if from != n.name {
		n.printf("%s received from %s: %s\n", n.name, from, msg.Payload)
	}
	return nil
}

// awaitGreetings returns once n heard a greeting from each of senders.
func (n *node) awaitGreetings(ctx context.Context, senders []string) error {
	heard := map[string]bool{}
	for !allHeard(heard, senders) {
		select {
		case from := <-n.greeted:
			heard[from] = true
		case <-ctx.Done():
			var missing []string
			for _, s := range senders {
				if !heard[s] {
					missing = append(missing, s)
				}
			}
			return fmt.Errorf("%s did not hear %s over Pub/Sub: %w", n.name, strings.Join(missing, ", "), ctx.Err())
		}
	}
	return nil
}

func allHeard(heard map[string]bool, senders []string) bool {
	return !slices.ContainsFunc(senders, func(s string) bool { return !heard[s] })
}

// checkRoute connects a WebSocket client to n and has sender route a
// message to it through Redis: the path of what the page sends.
func (n *node) checkRoute(ctx context.Context, sender *node) error {
	id := "startup-check-" + watermill.NewShortUUID()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(n.url, "http")+"/ws?client="+id, nil)
	if err != nil {
		return fmt.Errorf("connect to %s/ws: %w", n.url, err)
	}
	defer ws.CloseNow()
	// The reply to whoami, routed to the client through Redis, says that
	// n has registered it.
	if err := ws.Write(ctx, websocket.MessageText, mustJSON(frame{Op: "whoami"})); err != nil {
		return err
	}
	if _, _, err := ws.Read(ctx); err != nil {
		return fmt.Errorf("%s did not answer its own client: %w", n.name, err)
	}
	want := reply{Kind: "info", Text: "start-up check from " + sender.name}
	result, err := sender.route.SendToClient(ctx, id, mustJSON(want))
	if err != nil {
		return err
	}
	if result.Status != wsroute.Delivered {
		return fmt.Errorf("%s routed to a client of %s: %s", sender.name, n.name, result.Status)
	}
	_, data, err := ws.Read(ctx)
	if err != nil {
		return fmt.Errorf("%s routed to a client of %s, which got nothing: %w", sender.name, n.name, err)
	}
	var got reply
	if err := json.Unmarshal(data, &got); err != nil || got != want {
		return fmt.Errorf("%s routed to a client of %s, which got %s", sender.name, n.name, data)
	}
	return ws.Close(websocket.StatusNormalClosure, "")
}

// greet publishes a greeting on the start-up check topic.
func (n *node) greet(ctx context.Context) (int64, error) {
	msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "hello from %s", n.name))
	msg.Metadata.Set("from", n.name)
	return n.publisher.PublishCount(ctx, greetingTopic, msg)
}

func (n *node) printf(format string, args ...any) {
	n.printMu.Lock()
	defer n.printMu.Unlock()
	fmt.Fprintf(n.out, format, args...)
}

func (n *node) close() {
	if n.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = n.server.Shutdown(ctx)
		cancel()
	}
	if n.route != nil {
		_ = n.route.Close()
	}
	if n.router != nil {
		_ = n.router.Close()
	}
	if n.streamsSub != nil {
		_ = n.streamsSub.Close()
	}
	if n.subscriber != nil {
		_ = n.subscriber.Close()
	}
	if n.streamsPublisher != nil {
		_ = n.streamsPublisher.Close()
	}
	if n.publisher != nil {
		_ = n.publisher.Close()
	}
	if n.frames != nil {
		_ = n.frames.Close()
	}
	_ = n.client.Close()
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
