package wsroute

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// Status is what became of a routed message.
type Status int

const (
	// Delivered: the message reached every live node holding a recipient
	// (Result.Nodes of them), which write it to the recipient's sockets.
	Delivered Status = iota + 1
	// Offline: no recipient is connected anywhere (stale entries of dead
	// nodes were removed on the way).
	Offline
	// Unreachable: recipients are registered on live nodes, but their
	// channels reached nobody (the nodes are not listening); those entries
	// were removed.
	Unreachable
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Offline:
		return "offline"
	case Unreachable:
		return "unreachable"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result reports a routed message.
type Result struct {
	Status Status
	Nodes  int // nodes the message reached
	Stale  int // stale registrations removed on the way
	// Offset and Epoch place a message kept in the history (see
	// HistoryConfig) in its client's or room's stream; kept, it can be
	// recovered whatever Status says. Offset is 0 for a message not kept.
	Offset uint64
	Epoch  string
}

// Metadata keys on the messages nodes route to each other.
const (
	metadataKind    = "wsroute_kind"    // "client", "room" or "all"
	metadataClient  = MetadataClient    // the recipient client
	metadataRoom    = MetadataRoom      // the recipient room
	metadataTargets = "wsroute_targets" // "connection,connection..." on this node (set by route.lua)
	metadataEpoch   = "wsroute_epoch"   // the history's epoch (set by route.lua)
	metadataOffset  = "wsroute_offset"  // the message's offset in it
	metadataSentAt  = "wsroute_sent_at" // when it was kept, Unix ms
)

// SendToClient writes data to every connection of clientID, on whichever
// nodes they are, in one Redis round trip. Messages one goroutine sends to
// one client arrive in the order sent. The error is for Redis failures;
// an offline client is a Result. With history (Config.History or
// WithHistory), the message is kept in the same round trip, for the
// client to recover if it is offline now.
func (n *Node) SendToClient(ctx context.Context, clientID string, data []byte, opts ...SendOption) (Result, error) {
	return n.route(ctx, "client", clientID, n.keys.client(clientID), data, opts,
		metadataKind, "client", metadataClient, clientID)
}

// Broadcast writes data to every connection that joined room, reaching
// only the nodes that have members in it. With history (Config.History or
// WithHistory), the message is kept in the same round trip.
func (n *Node) Broadcast(ctx context.Context, room string, data []byte, opts ...SendOption) (Result, error) {
	return n.route(ctx, "room", room, n.keys.room(room), data, opts,
		metadataKind, "room", metadataRoom, room)
}

// BroadcastAll writes data to every connection on every node.
func (n *Node) BroadcastAll(ctx context.Context, data []byte) (Result, error) {
	if n.isClosing() {
		return Result{}, ErrClosed
	}
	msg := message.NewMessage(watermill.NewUUID(), data)
	msg.Metadata.Set(metadataKind, "all")
	nodes, err := n.publisher.PublishCount(ctx, n.keys.allChannel(), msg)
	if err != nil {
		return Result{}, err
	}
	n.stats.routed.Add(1)
	return Result{Status: Delivered, Nodes: int(nodes)}, nil
}

func (n *Node) route(ctx context.Context, kind, name, key string, data []byte, opts []SendOption, metadata ...string) (Result, error) {
	if n.isClosing() {
		return Result{}, ErrClosed
	}
	var o sendOptions
	for _, opt := range opts {
		opt(&o)
	}
	keep := n.config.History.keeps(kind, name)
	if o.history != nil {
		keep = *o.history
	}
	h := n.config.History
	keys := []string{key}
	args := make([]any, 0, 10+len(metadata))
	args = append(args, n.keys.prefix, kind, n.publishCommand, watermill.NewUUID(), data)
	if keep {
		keys = append(keys, n.keys.historyMeta(kind, name), n.keys.history(kind, name))
		args = append(args, "1", h.Size, ms(h.TTL), ms(h.MetaTTL), newEpoch())
	} else {
		args = append(args, "0", "", "", "", "")
	}
	for _, m := range metadata {
		args = append(args, m)
	}
	out, err := routeScript.Run(ctx, n.retries, n.config.Client, keys, args...).Slice()
	if keep && redis.IsOOMError(err) {
		// Redis is full: refused whole, nothing was kept or sent. Live
		// delivery goes on, the history is dropped (DEL takes no memory),
		// and the stream's clients are told by its next epoch that they
		// missed messages.
		args[5] = "drop"
		n.stats.historiesDropped.Add(1)
		out, err = routeScript.Run(ctx, n.retries, n.config.Client, keys, args...).Slice()
		keep = false
	}
	if err == nil && len(out) != 5 {
		err = fmt.Errorf("unexpected reply from route.lua: %v", out)
	}
	if err != nil {
		slotmap.Refresh(err, n.config.Client)
		return Result{}, fmt.Errorf("wsroute: route to %s: %w", key, err)
	}
	reached, stale, live := asInt(out[0]), asInt(out[1]), asInt(out[2])
	n.stats.reaped.Add(uint64(stale))
	r := Result{Nodes: reached, Stale: stale, Offset: uint64(asInt(out[3]))}
	r.Epoch, _ = out[4].(string)
	if keep {
		n.stats.kept.Add(1)
	}
	switch {
	case reached > 0:
		r.Status = Delivered
		n.stats.routed.Add(1)
	case live > 0:
		r.Status = Unreachable
		n.stats.unreachable.Add(1)
	default:
		r.Status = Offline
		n.stats.offline.Add(1)
	}
	return r, nil
}

func asInt(v any) int {
	i, _ := v.(int64)
	return int(i)
}

// consume writes what other nodes route here to the local connections. It
// never waits for a client: writes are queued per connection.
func (n *Node) consume(messages <-chan *message.Message) {
	for msg := range messages {
		n.stats.received.Add(1)
		n.deliver(msg)
		msg.Ack()
	}
}

func (n *Node) deliver(msg *message.Message) {
	conns := n.recipients(msg)
	if len(conns) == 0 {
		return
	}
	// What framed connections need is made once, for the first of them:
	// plain ones take the payload as it is.
	var (
		stream string
		m      streamMessage
		frame  []byte
	)
	for _, c := range conns {
		if !c.framed {
			c.enqueue(msg.Payload)
			continue
		}
		if frame == nil {
			stream = streamName(msg.Metadata.Get(metadataKind), msg.Metadata.Get(metadataRoom))
			m = streamMessage{epoch: msg.Metadata.Get(metadataEpoch), data: msg.Payload}
			m.offset, _ = strconv.ParseUint(msg.Metadata.Get(metadataOffset), 10, 64)
			m.sentAt, _ = strconv.ParseInt(msg.Metadata.Get(metadataSentAt), 10, 64)
			frame = encodeMessage(stream, m, false)
		}
		c.receiveFramed(stream, m, frame)
	}
}

// recipients finds the local connections a routed message is for. A
// client message names its connections: one that is gone does not get it,
// and no other connection has its ID (see keys).
func (n *Node) recipients(msg *message.Message) []*localConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	var conns []*localConn
	switch msg.Metadata.Get(metadataKind) {
	case "client":
		for _, id := range strings.Split(msg.Metadata.Get(metadataTargets), ",") {
			c := n.conns[id]
			if c == nil {
				n.stats.fenced.Add(1)
				continue
			}
			conns = append(conns, c)
		}
	case "room":
		for c := range n.rooms[msg.Metadata.Get(metadataRoom)] {
			conns = append(conns, c)
		}
	case "all":
		for _, c := range n.conns {
			conns = append(conns, c)
		}
	}
	return conns
}
