package wsroute

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

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

	mu        sync.Mutex
	queue     [][]byte
	closed    bool
	wake      chan struct{} // capacity 1: something was queued
	done      chan struct{} // closed by shutdown
	rooms     map[string]bool
	written   chan struct{} // closed when the writer has exited
	closeDone chan struct{} // closed when Conn.Close has returned
}

// Serve runs a connection of clientID until it ends: it registers it,
// publishes its frames to Config.Inbound, writes what is routed to it, and
// removes its registration and room memberships when it closes. The
// client's identity must come from authentication, never from the client.
func (n *Node) Serve(ctx context.Context, conn Conn, clientID string) error {
	c := &localConn{
		node:      n,
		conn:      conn,
		id:        uuid.NewString(),
		clientID:  clientID,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		rooms:     map[string]bool{},
		written:   make(chan struct{}),
		closeDone: make(chan struct{}),
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
	if err := n.register(ctx, c); err != nil {
		n.refuseRegistration(err, c.shutdown)
		return fmt.Errorf("wsroute: register a connection of %q: %w", clientID, err)
	}

	logger := n.logger.With(watermill.LogFields{"client": clientID, "connection": c.id})
	for {
		data, err := conn.Read(ctx)
		if err != nil {
			c.shutdown(StatusNormalClosure, "")
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

// enqueue queues data for the writer, applying the slow-client policy when
// the queue is full. It never blocks.
func (c *localConn) enqueue(data []byte) {
	n := c.node
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= n.config.SendQueueSize {
		if n.config.SlowClient == Disconnect {
			c.mu.Unlock()
			n.stats.disconnected.Add(1)
			c.shutdown(StatusPolicyViolation, "too slow: send queue full")
			return
		}
		c.queue[0] = nil
		c.queue = c.queue[1:]
		n.stats.dropped.Add(1)
	}
	c.queue = append(c.queue, data)
	c.mu.Unlock()
	n.stats.delivered.Add(1)
	select {
	case c.wake <- struct{}{}:
	default:
	}
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
			data := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.mu.Unlock()

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
