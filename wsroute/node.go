package wsroute

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/internal/sendonce"
)

// SlowClientPolicy says what happens when a connection's send queue is full.
type SlowClientPolicy int

const (
	// DropOldest discards the oldest queued message to make room, and
	// counts it in Stats.Dropped. The connection stays open.
	DropOldest SlowClientPolicy = iota
	// Disconnect closes the connection with StatusPolicyViolation (1008),
	// counted in Stats.Disconnected; the client reconnects and catches up by
	// its own means.
	Disconnect
)

// Config configures a Node. The zero value of every field but Client means
// its documented default.
type Config struct {
	// Client holds the registry and carries the routed messages. Required;
	// never closed by the node.
	Client redis.UniversalClient

	// NodeID names this node in the registry. It must be unique among the
	// live nodes. Zero means hostname:pid.
	NodeID string

	// Prefix starts every Redis key and channel name. Zero means "wsroute:".
	// On Redis Cluster use a hash-tagged prefix such as "{wsroute}:", so
	// that the routing scripts' keys share a slot, and so do the nodes'
	// channels, which are shard channels there.
	Prefix string

	// NodeTTL is how long the node counts as alive without renewing its
	// liveness key (renewed every NodeTTL/3). When a node dies, messages to
	// its clients report Offline at most NodeTTL later. Zero means 10s.
	NodeTTL time.Duration

	// RegistrationTTL is how long a client's or room's entry outlives the
	// last node renewing it (renewed every RegistrationTTL/3), so that
	// entries of nodes that died do not accumulate. Zero means 1h.
	RegistrationTTL time.Duration

	// SendQueueSize bounds the messages waiting for each connection's
	// writer. Zero means 256.
	SendQueueSize int

	// SlowClient says what happens when a send queue is full. The zero
	// value is DropOldest.
	SlowClient SlowClientPolicy

	// WriteTimeout bounds one write to a client; a client that does not
	// take a message within it is disconnected. Zero means 10s.
	WriteTimeout time.Duration

	// Inbound, if set, receives every frame a local client sends, as a
	// message on InboundTopic with the client ID in MetadataFrom. Nil means
	// frames from clients are read and discarded (push-only use).
	Inbound message.Publisher

	// InboundTopic is where frames from clients are published. Zero means
	// "wsroute.inbound".
	InboundTopic string

	// CloseTimeout bounds Close, whatever Redis does: registrations it
	// could not remove by then stop counting when the node's liveness key
	// expires (NodeTTL). Zero means 5s.
	CloseTimeout time.Duration

	// MaxConnectionsPerClient bounds the connections one client ID may
	// have at once, on all nodes together. Routing to a client reads its
	// whole entry in Redis, inside a script that holds Redis for everyone
	// meanwhile, so one client with thousands of sockets would slow every
	// route. The registration script counts the client's live connections
	// and refuses one over the bound in the same atomic step, so nodes
	// registering at once cannot exceed it; the refused connection is
	// closed with StatusTooManyConnections (4409) and counted in
	// Stats.TooManyConnections, and the client's other connections are
	// left alone. Give every node the same value: each checks its own.
	// Zero means 64; a negative value means no bound.
	MaxConnectionsPerClient int

	// InboundRate limits the frames each connection may send, per second
	// on average; a connection over it (bursts of InboundBurst allowed) is
	// closed with StatusRateLimited (4429) and counted in
	// Stats.RateLimited. The limit applies whether or not Inbound is set:
	// reading frames costs the node even when it discards them. It counts
	// the messages Conn.Read returns (pings and pongs are not). Zero
	// means no limit.
	InboundRate float64

	// InboundBurst is how many frames a connection may send at once, and
	// how many it may send on connecting, within InboundRate. Zero means
	// one second's worth (InboundRate rounded up). Only with InboundRate.
	InboundBurst int

	// PresenceEvents makes the nodes record every join and leave of a room
	// (see Join and Presence) on a Redis stream, PresenceTopic(): a join
	// when a client's first connection in the room joins, on any node, a
	// leave when its last one leaves, closes, or is found on a dead node.
	// Each is recorded once in the cluster, by the script that changes the
	// room's presence, in the same atomic step: none is lost to a node
	// dying between the change and a publish, none recorded twice. Read
	// them with redisbus' StreamsSubscriber as Watermill messages (see
	// ParsePresenceEvent). Give every node the same value: each records
	// the changes its own scripts make.
	PresenceEvents bool

	// PresenceEventsMaxLen bounds the presence events stream, about (XADD
	// MAXLEN ~): a consumer further behind loses the oldest. Zero means
	// 10,000. Only with PresenceEvents.
	PresenceEventsMaxLen int

	// History keeps what is sent to clients and rooms, with offsets, so
	// that a client that reconnects, to any node, gets what it missed, or
	// is told it cannot (see HistoryConfig and docs/wsroute-protocol.md).
	// The zero value keeps nothing unless a call asks (WithHistory). Give
	// every node the same value.
	History HistoryConfig
}

func (c *Config) setDefaults() {
	if c.NodeID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "node"
		}
		c.NodeID = host + ":" + strconv.Itoa(os.Getpid())
	}
	if c.Prefix == "" {
		c.Prefix = "wsroute:"
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = 10 * time.Second
	}
	if c.RegistrationTTL == 0 {
		c.RegistrationTTL = time.Hour
	}
	if c.SendQueueSize == 0 {
		c.SendQueueSize = 256
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.InboundTopic == "" {
		c.InboundTopic = "wsroute.inbound"
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.MaxConnectionsPerClient == 0 {
		c.MaxConnectionsPerClient = defaultMaxConnectionsPerClient
	}
	c.History.setDefaults()
}

// defaultMaxConnectionsPerClient is more connections than a person opens
// (tabs, devices), few enough that a route to one client stays cheap.
const defaultMaxConnectionsPerClient = 64

// Validate reports the first invalid field, if any.
func (c Config) Validate() error {
	field := func(name, problem string) error {
		return &redisbus.ConfigError{Field: "wsroute.Config." + name, Problem: problem}
	}
	switch {
	case c.Client == nil:
		return field("Client", "is required")
	case c.NodeTTL < 0:
		return field("NodeTTL", "must not be negative")
	case c.NodeTTL > 0 && c.NodeTTL < 30*time.Millisecond:
		return field("NodeTTL", "must be at least 30ms")
	case c.RegistrationTTL < 0:
		return field("RegistrationTTL", "must not be negative")
	case c.SendQueueSize < 0:
		return field("SendQueueSize", "must not be negative")
	case c.SlowClient != DropOldest && c.SlowClient != Disconnect:
		return field("SlowClient", fmt.Sprintf("unknown policy %d", c.SlowClient))
	case c.WriteTimeout < 0:
		return field("WriteTimeout", "must not be negative")
	case c.CloseTimeout < 0:
		return field("CloseTimeout", "must not be negative")
	case c.InboundRate < 0 || math.IsNaN(c.InboundRate) || math.IsInf(c.InboundRate, 0):
		return field("InboundRate", "must be a finite number of frames per second, 0 for no limit")
	case c.InboundBurst < 0:
		return field("InboundBurst", "must not be negative")
	case c.InboundBurst > 0 && c.InboundRate == 0:
		return field("InboundBurst", "is set, but InboundRate is 0 (no limit)")
	case c.PresenceEventsMaxLen < 0:
		return field("PresenceEventsMaxLen", "must not be negative")
	case c.PresenceEventsMaxLen > 0 && !c.PresenceEvents:
		return field("PresenceEventsMaxLen", "is set, but PresenceEvents is off")
	}
	return c.History.validate(field)
}

// ErrClosed is returned by a Node's methods after Close.
var ErrClosed = errors.New("wsroute: node is closed")

// Node is one server holding WebSocket connections: it registers them in
// Redis, receives what other nodes route to them, and routes messages to
// clients and rooms wherever they are connected.
type Node struct {
	config      Config
	logger      watermill.LoggerAdapter
	incarnation string // tells this process from an earlier one with the same NodeID
	keys        keys
	stats       counters
	// retries sends a route again only when Redis did not run it.
	retries sendonce.Policy

	publisher  *redisbus.Publisher
	subscriber *redisbus.Subscriber
	// publishCommand is what route.lua publishes with: "SPUBLISH" on a
	// cluster, where the node channels are shard channels, else "PUBLISH".
	publishCommand string
	// subscriptionClient is a client of the cluster's masters the node
	// made for its subscriptions, closed with it; nil when it subscribes
	// through Config.Client.
	subscriptionClient *redis.ClusterClient

	mu      sync.Mutex
	closed  bool
	conns   map[string]*localConn          // by connection ID
	clients map[string]map[*localConn]bool // by client ID
	rooms   map[string]map[*localConn]bool // by room
	// pendingLeaves are connections out of a room here that Redis did not
	// take out of its presence yet, by room (see sendLeave).
	pendingLeaves map[string]map[*localConn]bool
	roomLocks     roomLocks // order each room's joins and leaves in Redis
	// restoreNow asks the heartbeat to write every registration again.
	restoreNow chan struct{}
	closing    chan struct{}
	closeDone  chan struct{}  // closed when the first Close returns
	wg         sync.WaitGroup // the node's own goroutines
	serving    sync.WaitGroup // Serve calls in progress
}

type counters struct {
	routed, offline, unreachable, reaped, received atomic.Uint64
	delivered, dropped, disconnected, fenced       atomic.Uint64
	inbound, inboundFailed                         atomic.Uint64
	registrationsRestored                          atomic.Uint64
	livenessRenewed, livenessFailed                atomic.Uint64
	registrationsRefused                           atomic.Uint64
	pingTimeouts, tooManyConnections, rateLimited  atomic.Uint64
	kept, recovered, recoveryFailed                atomic.Uint64
	replayed, duplicates, historiesDropped         atomic.Uint64
}

// Stats are counters since the node started, and its connections now.
type Stats struct {
	Connections  int
	Routed       uint64 // messages that reached at least one node (sent by this node)
	Offline      uint64 // messages to a client or room with no live registration
	Unreachable  uint64 // messages whose owners were registered but not listening
	Reaped       uint64 // stale registrations this node removed on the way, presence entries of dead nodes included
	Received     uint64 // routed messages that reached this node (for its clients or rooms)
	Delivered    uint64 // messages queued to local connections
	Dropped      uint64 // messages a slow local client lost (DropOldest)
	Disconnected uint64 // slow local clients closed (Disconnect, or a write timeout)
	Fenced       uint64 // messages for a connection that is no longer here
	Inbound      uint64 // frames received from local clients and published
	// InboundFailed counts frames that could not be published to Inbound.
	InboundFailed uint64
	// RegistrationsRestored counts the times the node found its
	// registrations gone (Redis restarted, or its liveness key expired) and
	// wrote them again.
	RegistrationsRestored uint64
	// LivenessRenewed and LivenessFailed count the renewals of the node's
	// liveness key. While renewals fail for longer than NodeTTL, senders
	// see this node's clients as Offline.
	LivenessRenewed, LivenessFailed uint64
	// RegistrationsRefused counts connections closed because Redis did
	// not take their registration (out of memory, unreachable).
	RegistrationsRefused uint64
	// PingTimeouts counts connections closed because they did not answer
	// a ping within HandlerConfig.PongTimeout: half-open connections, and
	// clients that stopped reading.
	PingTimeouts uint64
	// TooManyConnections counts connections refused because their client
	// had Config.MaxConnectionsPerClient connections already.
	TooManyConnections uint64
	// RateLimited counts connections closed for sending frames faster than
	// Config.InboundRate.
	RateLimited uint64
	// Kept counts the messages this node sent that were kept in a history.
	Kept uint64
	// Recovered and RecoveryFailed count the streams framed connections
	// asked to recover, by whether they got everything they missed
	// ("recovered": true) or were told they could not; RecoveryFailed
	// also counts the streams whose history was lost under a connection.
	Recovered, RecoveryFailed uint64
	// Replayed counts the messages sent from a history: to connections
	// that recovered, and to fill gaps in what the node received.
	Replayed uint64
	// Duplicates counts the live messages not sent to a connection
	// because it had them already (replayed at the seam, or routed twice).
	Duplicates uint64
	// HistoriesDropped counts the messages this node sent unkept because
	// Redis was full: their histories were deleted, and their clients
	// told of it by the next epoch.
	HistoriesDropped uint64
}

// NewNode starts a node: it marks the node alive, subscribes to its
// channel and starts the heartbeat. A nil logger means no logging.
func NewNode(config Config, logger watermill.LoggerAdapter) (*Node, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	n := &Node{
		config:        config,
		logger:        logger.With(watermill.LogFields{"node": config.NodeID}),
		incarnation:   uuid.NewString(),
		keys:          keys{prefix: config.Prefix},
		retries:       sendonce.PolicyOf(config.Client),
		conns:         map[string]*localConn{},
		clients:       map[string]map[*localConn]bool{},
		rooms:         map[string]map[*localConn]bool{},
		roomLocks:     roomLocks{seed: maphash.MakeSeed()},
		pendingLeaves: map[string]map[*localConn]bool{},
		restoreNow:    make(chan struct{}, 1),
		closing:       make(chan struct{}),
		closeDone:     make(chan struct{}),
	}
	// On a cluster, a PUBLISH counts the subscribers of the node that runs
	// it only, so route.lua could not tell a deaf node from one listening
	// elsewhere. Shard channels in the registry's slot are counted on its
	// owner, whichever it is, and follow the slot when it moves.
	cluster, sharded := config.Client.(*redis.ClusterClient)
	n.publishCommand = "PUBLISH"
	subscriptions := config.Client
	if sharded {
		n.publishCommand = "SPUBLISH"
		if n.subscriptionClient = mastersOf(cluster); n.subscriptionClient != nil {
			subscriptions = n.subscriptionClient
		}
	}
	var err error
	if n.publisher, err = redisbus.NewPublisher(redisbus.PublisherConfig{Client: config.Client, Sharded: sharded, CloseTimeout: config.CloseTimeout}, n.logger); err != nil {
		n.closeSubscriptionClient()
		return nil, err
	}
	n.subscriber, err = redisbus.NewSubscriber(redisbus.SubscriberConfig{
		Client:  subscriptions,
		Sharded: sharded,
		// While the node was not listening, senders found its channel
		// deaf and removed its entries as unreachable: write them again.
		OnReconnect: func(redisbus.LossWindow) { signalRestore(n.restoreNow) },
	}, n.logger)
	if err != nil {
		_ = n.publisher.Close()
		n.closeSubscriptionClient()
		return nil, err
	}
	fail := func(err error) (*Node, error) {
		_ = n.subscriber.Close()
		n.closeSubscriptionClient()
		_ = n.publisher.Close()
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.renewLiveness(ctx); err != nil {
		return fail(fmt.Errorf("wsroute: mark node alive: %w", err))
	}
	for _, channel := range []string{n.keys.nodeChannel(config.NodeID), n.keys.allChannel()} {
		messages, err := n.subscriber.Subscribe(context.Background(), channel)
		if err != nil {
			return fail(fmt.Errorf("wsroute: subscribe %q: %w", channel, err))
		}
		n.wg.Go(func() { n.consume(messages) })
	}
	n.wg.Go(n.heartbeat)
	n.wg.Go(n.maintainPresence)
	return n, nil
}

// mastersOf returns a client like c that subscribes on masters only, or
// nil when c does already. A shard channel's subscribers on a replica
// (ReadOnly, RouteByLatency, RouteRandomly) receive what is published, but
// are not counted by the SPUBLISH on the master: route.lua would find
// every node deaf.
func mastersOf(c *redis.ClusterClient) *redis.ClusterClient {
	opt := *c.Options()
	if !opt.ReadOnly && !opt.RouteByLatency && !opt.RouteRandomly {
		return nil
	}
	opt.ReadOnly, opt.RouteByLatency, opt.RouteRandomly = false, false, false
	opt.Addrs = slices.Clone(opt.Addrs) // go-redis appends the nodes it finds to it
	return redis.NewClusterClient(&opt)
}

func (n *Node) closeSubscriptionClient() {
	if n.subscriptionClient != nil {
		_ = n.subscriptionClient.Close()
	}
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.config.NodeID }

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	conns := len(n.conns)
	n.mu.Unlock()
	return Stats{
		Connections:           conns,
		Routed:                n.stats.routed.Load(),
		Offline:               n.stats.offline.Load(),
		Unreachable:           n.stats.unreachable.Load(),
		Reaped:                n.stats.reaped.Load(),
		Received:              n.stats.received.Load(),
		Delivered:             n.stats.delivered.Load(),
		Dropped:               n.stats.dropped.Load(),
		Disconnected:          n.stats.disconnected.Load(),
		Fenced:                n.stats.fenced.Load(),
		Inbound:               n.stats.inbound.Load(),
		InboundFailed:         n.stats.inboundFailed.Load(),
		RegistrationsRestored: n.stats.registrationsRestored.Load(),
		LivenessRenewed:       n.stats.livenessRenewed.Load(),
		LivenessFailed:        n.stats.livenessFailed.Load(),
		RegistrationsRefused:  n.stats.registrationsRefused.Load(),
		PingTimeouts:          n.stats.pingTimeouts.Load(),
		TooManyConnections:    n.stats.tooManyConnections.Load(),
		RateLimited:           n.stats.rateLimited.Load(),
		Kept:                  n.stats.kept.Load(),
		Recovered:             n.stats.recovered.Load(),
		RecoveryFailed:        n.stats.recoveryFailed.Load(),
		Replayed:              n.stats.replayed.Load(),
		Duplicates:            n.stats.duplicates.Load(),
		HistoriesDropped:      n.stats.historiesDropped.Load(),
	}
}

// Close closes every local connection (StatusGoingAway), removes the
// node's registrations so senders see its clients offline at once, and
// stops. It does not close the Redis client and is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.closeDone
		return nil
	}
	n.closed = true
	close(n.closing)
	defer close(n.closeDone)
	conns := make([]*localConn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()

	for _, c := range conns {
		c.shutdown(StatusGoingAway, "server shutting down")
	}
	// What follows waits for Redis: it runs aside, so that Close returns
	// within CloseTimeout however Redis behaves. The goroutines still
	// waiting on it then exit when the client's timeouts end their calls.
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		n.serving.Wait() // each removes its registration
		// Without its liveness key, every entry of this node is stale at once.
		if err := expireNodeScript.Run(context.Background(), n.config.Client, []string{n.keys.node(n.config.NodeID)}, n.incarnation).Err(); err != nil {
			n.logger.Error("Cannot remove the liveness key; clients show offline after NodeTTL", err, nil)
		}
		_ = n.subscriber.Close()
		n.closeSubscriptionClient()
		_ = n.publisher.Close()
		n.wg.Wait()
	}()
	timer := time.NewTimer(n.config.CloseTimeout)
	defer timer.Stop()
	select {
	case <-finished:
		return nil
	case <-timer.C:
		err := fmt.Errorf("wsroute: Close gave up after %s (Config.CloseTimeout): Redis did not answer; this node's registrations lapse after NodeTTL", n.config.CloseTimeout)
		n.logger.Error("Close gave up waiting for Redis", err, nil)
		return err
	}
}

func (n *Node) isClosing() bool {
	select {
	case <-n.closing:
		return true
	default:
		return false
	}
}
