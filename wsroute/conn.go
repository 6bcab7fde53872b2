package wsroute

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// StatusCode is a WebSocket close code.
type StatusCode = websocket.StatusCode

// Close codes the node uses.
const (
	StatusNormalClosure   = websocket.StatusNormalClosure   // 1000: the client left or the application closed it
	StatusGoingAway       = websocket.StatusGoingAway       // 1001: the node is shutting down
	StatusUnsupportedData = websocket.StatusUnsupportedData // 1003
	StatusInvalidPayload  = websocket.StatusInvalidFramePayloadData
	StatusPolicyViolation = websocket.StatusPolicyViolation // 1008: a slow client, under Disconnect
	StatusMessageTooBig   = websocket.StatusMessageTooBig   // 1009: a frame over MaxMessageSize
	StatusTryAgainLater   = websocket.StatusTryAgainLater   // 1013: Redis is out of memory and cannot register the connection
)

// Close codes of the node's own limits. They are application codes (RFC
// 6455 reserves 4000-4999 for them), numbered 4000 plus the HTTP status of
// the same meaning, as graphql-ws numbers its own, so that a client can
// tell them from each other and from the protocol's: it should not come
// back at once after 4409 or 4429, and may after 4408.
const (
	// StatusPingTimeout (4408): the connection did not answer a ping within
	// HandlerConfig.PongTimeout. A client sees it only if it is reading
	// again by then; usually it is gone.
	StatusPingTimeout StatusCode = 4408
	// StatusTooManyConnections (4409): the client ID already had
	// Config.MaxConnectionsPerClient connections; this new one is refused.
	StatusTooManyConnections StatusCode = 4409
	// StatusRateLimited (4429): the connection sent frames faster than
	// Config.InboundRate allows.
	StatusRateLimited StatusCode = 4429
)

// ErrTooManyConnections is what Serve returns for a connection it refused
// because its client ID had Config.MaxConnectionsPerClient already.
var ErrTooManyConnections = errors.New("wsroute: too many connections for this client ID (Config.MaxConnectionsPerClient)")

// Conn is a client connection as the node sees it: the transport is an
// adapter's business (see Handler for github.com/coder/websocket).
//
// Read is called from one goroutine, Write from another (the connection's
// writer), and Close from any; Close must make a blocked Read or Write
// return.
type Conn interface {
	// Read returns the next frame's payload. An error ends the connection;
	// the adapter closes it with the fitting code first (too big,
	// malformed).
	Read(ctx context.Context) ([]byte, error)
	// Write sends one frame; ctx carries the write timeout.
	Write(ctx context.Context, data []byte) error
	// Close closes the connection with a close code and reason.
	Close(code StatusCode, reason string) error
}

// Metadata keys of the messages the node publishes for frames from clients.
const (
	MetadataFrom       = "wsroute_from"       // the sender's client ID
	MetadataConnection = "wsroute_connection" // the sender's connection ID
	MetadataNode       = "wsroute_node"       // the node holding that connection
)

// localConn is a connection held by this node: its registration, its
// rooms, and a bounded send queue drained by one writer goroutine, so that
// routing never waits for a client.
type localConn struct {
	node     *Node
	conn     Conn
	id       string
	clientID string
	// removed is set before the registration is released, so that a
	// restore that wrote it again at the same time releases it again.
	removed atomic.Bool
	// readingSince is when the Read in progress started (see monotonic),
	// 0 between Reads: the keepalive holds a missing pong against the
	// client only if the node was reading all the while.
	readingSince atomic.Int64

	// framed: the connection speaks wsroute.v1 (see Subprotocol).
	framed bool
	// ctx ends when the connection does: it bounds its history reads.
	ctx    context.Context
	cancel context.CancelFunc
	// fillers are the goroutines sending streams from their histories.
	fillers sync.WaitGroup

	mu        sync.Mutex
	queue     []queued
	closed    bool
	wake      chan struct{}     // capacity 1: something was queued
	space     chan struct{}     // capacity 1: the writer took something
	done      chan struct{}     // closed by shutdown
	rooms     map[string][]byte // room -> the connection's info there
	written   chan struct{}     // closed when the writer has exited
	closeDone chan struct{}     // closed when Conn.Close has returned
	// recover holds the positions the client presented that no stream
	// has taken yet; streams, the streams it follows (framed only).
	recover map[string]Position
	streams map[string]*followed
}

// Serve runs a connection of clientID until it ends: it registers it,
// publishes its frames to Config.Inbound, writes what is routed to it, and
// removes its registration and room memberships when it closes. The
// client's identity must come from authentication, never from the client.
//
// A connection over Config.MaxConnectionsPerClient is closed with
// StatusTooManyConnections and Serve returns ErrTooManyConnections.
// Serve does not ping: a Conn of your own keeps its peer alive itself
// (Handler does, see HandlerConfig.PingInterval).
func (n *Node) Serve(ctx context.Context, conn Conn, clientID string) error {
	return n.serve(ctx, conn, clientID, ServeOptions{}, nil)
}

// ServeWith is Serve with protocol options: a framed connection (the
// wsroute.v1 protocol, see Subprotocol) gets JSON envelopes with offsets
// and recovers what it missed since the positions it presented.
func (n *Node) ServeWith(ctx context.Context, conn Conn, clientID string, opts ServeOptions) error {
	return n.serve(ctx, conn, clientID, opts, nil)
}

func (n *Node) serve(ctx context.Context, conn Conn, clientID string, opts ServeOptions, pings *keepalive) error {
	c := &localConn{
		node:      n,
		conn:      conn,
		id:        uuid.NewString(),
		clientID:  clientID,
		framed:    opts.Framed,
		wake:      make(chan struct{}, 1),
		space:     make(chan struct{}, 1),
		done:      make(chan struct{}),
		rooms:     map[string][]byte{},
		written:   make(chan struct{}),
		closeDone: make(chan struct{}),
		recover:   maps.Clone(opts.Recover),
		streams:   map[string]*followed{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	defer c.cancel()
	// Live messages to the client wait for its history to be read from
	// the moment the connection can receive them.
	var own *followed
	if c.follows("client", clientID) {
		own = c.startFollowing("client")
	}
	// The connection is known here before Redis can route to it: a message
	// routed in between would otherwise find no such connection and be
	// dropped.
	if !n.addConn(c) {
		_ = conn.Close(StatusGoingAway, "server shutting down")
		return ErrClosed
	}
	defer n.serving.Done()
	go c.write()
	defer n.removeConn(c)
	// Over the cap, the new connection is refused; the oldest is not
	// closed to make room. Closing the oldest would let a client that
	// reconnects in a loop, or two tabs under a cap of one, evict its own
	// working connections forever, each eviction a close on another node,
	// sent there by a Pub/Sub message that may be lost (and the cap with
	// it). Refused, an over-eager client pays for its own handshake only,
	// learns why from the close code, and its other connections (other
	// devices, which did nothing) keep working. The cost of refusing is a
	// client whose old connections are dead but not yet noticed; the
	// keepalive removes those within its bound.
	registered, err := n.register(ctx, c, n.config.MaxConnectionsPerClient)
	if err != nil {
		n.refuseRegistration(err, c.shutdown)
		return fmt.Errorf("wsroute: register a connection of %q: %w", clientID, err)
	}
	if !registered {
		n.stats.tooManyConnections.Add(1)
		c.shutdown(StatusTooManyConnections, fmt.Sprintf("too many connections: at most %d per client", n.config.MaxConnectionsPerClient))
		return ErrTooManyConnections
	}
	// Registered: every message routed to the client from now on reaches
	// this connection, so the history read next misses none.
	if own != nil {
		c.startFilling("client", own)
	}
	if pings != nil {
		pinging := make(chan struct{})
		go func() {
			defer close(pinging)
			c.keepalive(*pings)
		}()
		defer func() { <-pinging }()
	}

	logger := n.logger.With(watermill.LogFields{"client": clientID, "connection": c.id})
	limit := n.inboundLimit()
	for {
		c.readingSince.Store(monotonic())
		data, err := conn.Read(ctx)
		c.readingSince.Store(0)
		if err != nil {
			c.shutdown(StatusNormalClosure, "")
			return nil
		}
		if limit != nil && !limit.allow(time.Now()) {
			n.stats.rateLimited.Add(1)
			c.shutdown(StatusRateLimited, "rate limit exceeded: too many frames")
			return nil
		}
		n.receive(ctx, c, data, logger)
	}
}

// refuseRegistration closes a connection Redis did not register, telling
// the client whether to come back: a Redis out of memory is a reason to
// try again later (1013), not an error of this server's (1011).
func (n *Node) refuseRegistration(err error, closeConn func(StatusCode, string)) {
	n.stats.registrationsRefused.Add(1)
	n.logger.Error("Cannot register a connection; closing it", err, nil)
	if redis.IsOOMError(err) {
		closeConn(StatusTryAgainLater, "server busy: try again later")
		return
	}
	closeConn(websocket.StatusInternalError, "server cannot register connections now")
}

// receive publishes a frame from a local client.
func (n *Node) receive(ctx context.Context, c *localConn, data []byte, logger watermill.LoggerAdapter) {
	if n.config.Inbound == nil {
		return
	}
	msg := message.NewMessageWithContext(ctx, watermill.NewUUID(), data)
	msg.Metadata.Set(MetadataFrom, c.clientID)
	msg.Metadata.Set(MetadataConnection, c.id)
	msg.Metadata.Set(MetadataNode, n.config.NodeID)
	if err := n.config.Inbound.Publish(n.config.InboundTopic, msg); err != nil {
		n.stats.inboundFailed.Add(1)
		logger.Error("Cannot publish a frame from a client", err, nil)
		return
	}
	n.stats.inbound.Add(1)
}

func (n *Node) addConn(c *localConn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.serving.Add(1)
	n.conns[c.id] = c
	if n.clients[c.clientID] == nil {
		n.clients[c.clientID] = map[*localConn]bool{}
	}
	n.clients[c.clientID][c] = true
	return true
}

// removeConn forgets a closed connection here and in Redis.
func (n *Node) removeConn(c *localConn) {
	<-c.written
	<-c.closeDone
	c.fillers.Wait()
	n.mu.Lock()
	c.removed.Store(true)
	delete(n.conns, c.id)
	if clients := n.clients[c.clientID]; clients != nil {
		delete(clients, c)
		if len(clients) == 0 {
			delete(n.clients, c.clientID)
		}
	}
	n.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), n.config.NodeTTL)
	defer cancel()
	for _, room := range c.roomList() {
		if err := n.leave(ctx, c, room); err != nil {
			n.logger.Error("Cannot leave a room", err, watermill.LogFields{"room": room})
		}
	}
	if err := n.release(ctx, c); err != nil {
		// The entry dies with the node's liveness or its own expiry.
		n.logger.Error("Cannot remove a registration", err, watermill.LogFields{"client": c.clientID})
	}
}

func (n *Node) localConns() []*localConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	conns := make([]*localConn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	return conns
}

// enqueue queues a live message for the writer, applying the slow-client
// policy when the queue is full. It never blocks.
func (c *localConn) enqueue(data []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.node.stats.delivered.Add(1)
	disconnect := c.queueLocked(data, false)
	c.mu.Unlock()
	if disconnect {
		c.disconnectSlow()
	}
}

// queued is a frame waiting for the writer. A kept one (a message of a
// history, or a position frame) is never dropped to make room: it was
// queued only when there was room (see handOn), and dropping it would
// leave a hole in its stream that nobody fills.
type queued struct {
	data []byte
	kept bool
}

// queueLocked appends data to the send queue of an open connection (c.mu
// held). A frame that is not kept meets the slow-client policy when the
// queue is full: it displaces the oldest frame that is not kept (or is
// dropped itself, if all are), or it reports that the connection must be
// disconnected, which the caller does once it released c.mu.
func (c *localConn) queueLocked(data []byte, kept bool) (disconnect bool) {
	n := c.node
	if len(c.queue) >= n.config.SendQueueSize && !kept {
		if n.config.SlowClient == Disconnect {
			return true
		}
		n.stats.dropped.Add(1)
		oldest := slices.IndexFunc(c.queue, func(q queued) bool { return !q.kept })
		if oldest < 0 {
			return false
		}
		c.queue = slices.Delete(c.queue, oldest, oldest+1)
	}
	c.queue = append(c.queue, queued{data: data, kept: kept})
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return false
}

// queueWait queues data once the queue has room, for messages read from a
// history: the slow-client policy is for live ones. It reports false if
// the connection closed first.
func (c *localConn) queueWait(data []byte) bool {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return false
		}
		if len(c.queue) < c.node.config.SendQueueSize {
			c.queueLocked(data, true)
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		if !c.awaitSpace() {
			return false
		}
	}
}

// awaitSpace waits until the writer takes something from the queue, and
// reports false if the connection closed first.
func (c *localConn) awaitSpace() bool {
	select {
	case <-c.space:
		return true
	case <-c.done:
		return false
	}
}

func (c *localConn) disconnectSlow() {
	c.node.stats.disconnected.Add(1)
	c.shutdown(StatusPolicyViolation, "too slow: send queue full")
}

// write sends queued messages in order until the connection closes.
func (c *localConn) write() {
	defer close(c.written)
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		for {
			c.mu.Lock()
			if len(c.queue) == 0 || c.closed {
				c.mu.Unlock()
				break
			}
			data := c.queue[0].data
			c.queue[0] = queued{}
			c.queue = c.queue[1:]
			c.mu.Unlock()
			select {
			case c.space <- struct{}{}:
			default:
			}

			ctx, cancel := context.WithTimeout(context.Background(), c.node.config.WriteTimeout)
			err := c.conn.Write(ctx, data)
			cancel()
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					c.node.stats.disconnected.Add(1)
				}
				c.shutdown(StatusPolicyViolation, "write failed")
				return
			}
		}
	}
}

// shutdown closes the connection once; Serve then unregisters it. The
// close handshake runs on a goroutine of its own, because a slow client
// may take seconds to answer it and the caller may be the routing loop.
func (c *localConn) shutdown(code StatusCode, reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.queue = nil
	close(c.done)
	c.mu.Unlock()
	c.cancel()
	go func() {
		defer close(c.closeDone)
		_ = c.conn.Close(code, reason)
	}()
}

func (c *localConn) roomList() []string {
	c.node.mu.Lock()
	defer c.node.mu.Unlock()
	rooms := make([]string, 0, len(c.rooms))
	for room := range c.rooms {
		rooms = append(rooms, room)
	}
	return rooms
}
