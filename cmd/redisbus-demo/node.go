package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/redisbusprom"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

//go:embed page.html
var page []byte

// pageInfoMarker is where page.html takes the node's pageInfo.
var pageInfoMarker = []byte("/*PAGE INFO*/null")

// Topics of the demo.
const (
	framesTopic   = "frames"          // in-process: frames from this node's clients
	eventsTopic   = "demo:events"     // best-effort Pub/Sub: every node logs every event
	ordersTopic   = "demo:orders"     // Streams: one node of the group processes each order
	ordersGroup   = "demo-processors" // the consumer group of all nodes
	greetingTopic = "demo:greetings"  // the start-up check that both nodes hear each other
	presenceGroup = "demo-presence"   // the consumer group of all nodes for the rooms' joins and leaves
)

// lobby is the room every page joins.
const lobby = "lobby"

// nodeConfig configures one demo node.
type nodeConfig struct {
	Name     string
	Addr     string       // listen address, as asked for
	Listener net.Listener // listening on Addr; the node serves it and closes it
	URL      string       // where a browser opens the node
	Color    string       // the node's colour on every page
	User     string       // the name a page of this node suggests first ("" lets the page pick a free one)
	Peers    []nodeLink   // the other nodes a page may move its connection to
	Redis    *redis.Options
	NodeTTL  time.Duration
	Out      io.Writer // where the node narrates what crosses it
}

// nodeLink is a node as pages show it and connect to it.
type nodeLink struct {
	Name  string `json:"name"`
	URL   string `json:"url"`
	Color string `json:"color"`
}

// pageInfo is what a node tells its page, in the page itself so that it
// shows the node's name and colour from the first paint.
type pageInfo struct {
	Node  string     `json:"node"`
	User  string     `json:"user"`
	Room  string     `json:"room"`
	Nodes []nodeLink `json:"nodes"` // this node first, then its peers
}

// node is one demo server: a wsroute node with its WebSocket endpoint and
// page, a Router that handles its clients' frames, and the Pub/Sub and
// Streams sides of the demo.
type node struct {
	name   string
	url    string
	page   []byte // page.html with the node's pageInfo
	client *redis.Client
	route  *wsroute.Node
	router *message.Router
	server *http.Server

	publisher        *redisbus.Publisher
	subscriber       *redisbus.Subscriber
	streamsPublisher *redisbus.StreamsPublisher
	streamsSub       *redisbus.StreamsSubscriber
	presenceSub      *redisbus.StreamsSubscriber
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
	ID   string `json:"id,omitempty"`   // the page's ID of what it sends, echoed in replies about it
	Sent int64  `json:"sent,omitempty"` // when the page sent it, Unix ms, for the receiver's latency
}

// reply is what clients receive.
type reply struct {
	Kind    string           `json:"kind"` // direct, room, all, sent, info, error, published, event, presence
	ID      string           `json:"id,omitempty"`
	From    string           `json:"from,omitempty"`
	To      string           `json:"to,omitempty"`
	Room    string           `json:"room,omitempty"`
	Text    string           `json:"text,omitempty"`
	Node    string           `json:"node,omitempty"` // the node the sender is on; of an event, the node it reached
	Status  string           `json:"status,omitempty"`
	Sent    int64            `json:"sent,omitempty"`
	Offset  uint64           `json:"offset,omitempty"` // of a direct message in the recipient's history
	Nodes   int              `json:"nodes,omitempty"`  // the nodes a direct message reached
	Source  string           `json:"source,omitempty"` // of an event: "pubsub" or "streams"
	Members []presenceMember `json:"members,omitempty"`
}

// presenceMember is a client in a room, as pages show it.
type presenceMember struct {
	Client string   `json:"client"`
	Nodes  []string `json:"nodes"` // of its connections in the room
}

func startNode(ctx context.Context, config nodeConfig, printMu *sync.Mutex) (_ *node, err error) {
	n := &node{name: config.Name, url: config.URL, client: redis.NewClient(config.Redis), printMu: printMu, out: config.Out, greeted: make(chan string, 16)}
	defer func() {
		if err != nil {
			n.close()
			_ = config.Listener.Close()
		}
	}()
	info, err := json.Marshal(pageInfo{Node: config.Name, User: config.User, Room: lobby,
		Nodes: append([]nodeLink{{Name: config.Name, URL: config.URL, Color: config.Color}}, config.Peers...)})
	if err != nil {
		return nil, err
	}
	// json.Marshal escapes <, > and &: the info cannot end the script
	// element it stands in.
	n.page = bytes.Replace(page, pageInfoMarker, info, 1)
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
	// The rooms' joins and leaves: one node of the group handles each and
	// tells the room who is in it now. Those of earlier runs (a real
	// Redis keeps them) are of no interest: the group starts at new ones.
	if n.presenceSub, err = redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: n.client, ConsumerGroup: presenceGroup, Consumer: config.Name, StartID: "$",
	}, logger); err != nil {
		return nil, err
	}
	if n.route, err = wsroute.NewNode(wsroute.Config{
		Client:         n.client,
		NodeID:         config.Name,
		NodeTTL:        config.NodeTTL,
		Inbound:        n.frames,
		InboundTopic:   framesTopic,
		PresenceEvents: true,
		// What is sent to a client or a room is kept in a history, so that
		// a page that lost its connection gets what it missed when it comes
		// back, on either node (the drop button shows it).
		History: wsroute.HistoryConfig{Clients: true, Rooms: true},
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
	frames := n.router.AddHandler("frames", framesTopic, n.frames, "demo:audit", n.publisher, n.route.Deliver(n.handleFrame))
	// A frame that cannot be handled (Redis down, say) is tried a few
	// times, then dropped with a log line: the in-process bus would hand
	// it back at once, for ever, and every later frame waits behind it.
	frames.AddMiddleware(n.dropAfterRetries, middleware.Retry{MaxRetries: 3, InitialInterval: 100 * time.Millisecond, Multiplier: 2}.Middleware)
	n.router.AddConsumerHandler("events", eventsTopic, n.subscriber, n.handleEvent("pubsub"))
	n.router.AddConsumerHandler("orders", ordersTopic, n.streamsSub, n.handleEvent("streams"))
	n.router.AddConsumerHandler("greetings", greetingTopic, n.subscriber, n.handleGreeting)
	n.router.AddConsumerHandler("presence", n.route.PresenceTopic(), n.presenceSub, n.handlePresence)
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
		// A page may move its connection to another node of the demo (the
		// drop button): those nodes' pages connect from their origins.
		OriginPatterns: peerOrigins(config.Peers),
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", handler)
	mux.Handle("/wsroute.js", wsroute.ClientScript())
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(n.page)
	})
	mux.HandleFunc("/presence", n.servePresence)
	mux.HandleFunc("/log", n.serveLog)
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"node": n.name, "wsroute": n.route.Stats(), "subscriber": n.subscriber.Stats(), "streams": n.streamsSub.Stats()})
	})
	n.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = n.server.Serve(config.Listener) }()
	return n, nil
}

// peerOrigins are the origins of the peers' pages, under each name a
// browser on this machine may have opened them by.
func peerOrigins(peers []nodeLink) []string {
	var patterns []string
	for _, p := range peers {
		u, err := url.Parse(p.URL)
		if err != nil {
			continue
		}
		patterns = append(patterns, u.Host)
		if port := u.Port(); port != "" {
			for _, host := range []string{"localhost", "127.0.0.1", "[::1]"} {
				patterns = append(patterns, host+":"+port)
			}
		}
	}
	return patterns
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

// dropAfterRetries logs and drops a frame its handler failed on.
func (n *node) dropAfterRetries(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			n.printf("%s: dropped a frame from %s after retries: %v\n", n.name, msg.Metadata.Get(wsroute.MetadataFrom), err)
			return nil, nil
		}
		return out, nil
	}
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
		// Kept in the recipient's history (Config.History.Clients): a
		// recipient offline now gets it when it comes back.
		result, err := n.route.SendToClient(ctx, f.To, mustJSON(reply{Kind: "direct", ID: f.ID, From: from, Text: f.Text, Node: n.name, Sent: f.Sent}))
		if err != nil {
			return []*message.Message{n.toClient(from, reply{Kind: "sent", ID: f.ID, To: f.To, Status: "failed: " + err.Error()})}, nil
		}
		n.printf("%s: %s -> %s (%s, %d node(s)): %s\n", n.name, from, f.To, result.Status, result.Nodes, f.Text)
		return []*message.Message{n.toClient(from, reply{Kind: "sent", ID: f.ID, To: f.To, Status: result.Status.String(), Offset: result.Offset, Nodes: result.Nodes})}, nil
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
		out := message.NewMessage(watermill.NewUUID(), mustJSON(reply{Kind: "room", ID: f.ID, From: from, Room: f.Room, Text: f.Text, Node: n.name, Sent: f.Sent}))
		out.Metadata.Set(wsroute.MetadataToRoom, f.Room) // kept in the room's history (Config.History.Rooms)
		return []*message.Message{out}, nil
	case "all":
		out := message.NewMessage(watermill.NewUUID(), mustJSON(reply{Kind: "all", ID: f.ID, From: from, Text: f.Text, Node: n.name, Sent: f.Sent}))
		out.Metadata.Set(wsroute.MetadataToAll, "true") // never kept: everyone connected now
		return []*message.Message{out}, nil
	case "publish":
		event := message.NewMessage(watermill.NewUUID(), []byte(f.Text))
		event.Metadata.Set("from", from+"@"+n.name)
		receivers, err := n.publisher.PublishCount(ctx, eventsTopic, event)
		if err != nil {
			return nil, err
		}
		return []*message.Message{n.toClient(from, reply{Kind: "published", ID: event.UUID, Source: "pubsub", Text: f.Text, From: from + "@" + n.name,
			Status: fmt.Sprintf("published to the %d node(s) subscribed now", receivers)})}, nil
	case "publish_reliable":
		order := message.NewMessage(watermill.NewUUID(), []byte(f.Text))
		order.Metadata.Set("from", from+"@"+n.name)
		ids, err := n.streamsPublisher.PublishIDs(ctx, ordersTopic, order)
		if err != nil {
			return nil, err
		}
		return []*message.Message{n.toClient(from, reply{Kind: "published", ID: order.UUID, Source: "streams", Text: f.Text, From: from + "@" + n.name,
			Status: "stored as stream entry " + ids[0]})}, nil
	}
	return []*message.Message{n.toClient(from, reply{Kind: "error", Text: "unknown op " + f.Op})}, nil
}

// toClient addresses a reply to a client. Replies are not kept in its
// history: they answer a frame of a connection that is there now.
func (n *node) toClient(clientID string, r reply) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), mustJSON(r))
	msg.Metadata.Set(wsroute.MetadataToClient, clientID)
	msg.Metadata.Set(wsroute.MetadataHistory, "false")
	return msg
}

// handleEvent logs what reached this node over Pub/Sub or Streams, and
// tells every page: a Pub/Sub event reaches every node, an order one node
// of the group.
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
		_, err := n.route.BroadcastAll(msg.Context(), mustJSON(reply{
			Kind: "event", ID: msg.UUID, Source: source, Text: entry.Text, From: entry.From, Node: n.name, Sent: entry.At.UnixMilli(),
		}))
		return err
	}
}

// handlePresence tells a room who is in it after one of its joins or
// leaves, wherever they are connected. Only the pages there now need it:
// it is not kept in the room's history.
func (n *node) handlePresence(msg *message.Message) error {
	e, err := wsroute.ParsePresenceEvent(msg)
	if err != nil {
		return err
	}
	members, err := n.presence(msg.Context(), e.Room)
	if err != nil {
		return err
	}
	_, err = n.route.Broadcast(msg.Context(), e.Room, mustJSON(reply{Kind: "presence", Room: e.Room, Members: members}), wsroute.WithoutHistory())
	return err
}

func (n *node) presence(ctx context.Context, room string) ([]presenceMember, error) {
	members, err := n.route.Presence(ctx, room)
	if err != nil {
		return nil, err
	}
	out := make([]presenceMember, 0, len(members))
	for _, m := range members {
		p := presenceMember{Client: m.ClientID}
		for _, c := range m.Connections {
			if !slices.Contains(p.Nodes, c.Node) {
				p.Nodes = append(p.Nodes, c.Node)
			}
		}
		slices.Sort(p.Nodes)
		out = append(out, p)
	}
	return out, nil
}

// servePresence answers who is in ?room= now.
func (n *node) servePresence(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	if room == "" {
		http.Error(w, "which room? ?room=", http.StatusBadRequest)
		return
	}
	members, err := n.presence(r.Context(), room)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, map[string]any{"room": room, "members": members})
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
	// Not kept: nobody comes back for it.
	result, err := sender.route.SendToClient(ctx, id, mustJSON(want), wsroute.WithoutHistory())
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
	if err := json.Unmarshal(data, &got); err != nil || got.Kind != want.Kind || got.Text != want.Text {
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
	if n.presenceSub != nil {
		_ = n.presenceSub.Close()
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
