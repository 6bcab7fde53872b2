package wsroute

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// MaxPresenceInfoSize bounds the info a connection shows in a room's
// presence (JoinWithInfo): a Presence reply carries every member's, and
// Redis keeps it for as long as the connection is in the room.
const MaxPresenceInfoSize = 1024

// ErrPresenceInfoTooBig is returned by JoinWithInfo for info over
// MaxPresenceInfoSize.
var ErrPresenceInfoTooBig = errors.New("wsroute: presence info is over MaxPresenceInfoSize")

// Member is a client present in a room: one that has at least one
// connection in it, on any node.
type Member struct {
	ClientID string
	// Connections are the client's connections in the room, by node and
	// connection ID; at least one.
	Connections []MemberConnection
}

// MemberConnection is a connection through which a client is in a room.
type MemberConnection struct {
	ID   string // the connection's ID, as in MetadataConnection
	Node string // the node holding it
	Info []byte // as given to JoinWithInfo; nil when none
}

// Metadata of the presence events (see Config.PresenceEvents), and the
// values of MetadataPresence and MetadataReason.
const (
	MetadataPresence = "wsroute_presence" // PresenceJoin or PresenceLeave
	MetadataRoom     = "wsroute_room"     // the room
	MetadataClient   = "wsroute_client"   // the client that joined or left
	MetadataReason   = "wsroute_reason"   // of a leave: ReasonLeft or ReasonNodeGone
	// MetadataNode (the node of the connection that made the change, or
	// the dead node) is set too.

	PresenceJoin  = "join"  // the client's first connection in the room joined
	PresenceLeave = "leave" // the client's last connection in the room is gone

	// ReasonLeft: the connection left the room (Leave) or closed, or its
	// node closed.
	ReasonLeft = "left"
	// ReasonNodeGone: the connection's node stopped renewing its liveness
	// (it died, or lost Redis for longer than NodeTTL) and someone noticed.
	ReasonNodeGone = "node_gone"
)

// PresenceEvent is a join or a leave, as ParsePresenceEvent reads it from
// a message of the presence events topic.
type PresenceEvent struct {
	Type     string // PresenceJoin or PresenceLeave
	Room     string
	ClientID string
	Node     string // the node of the connection that joined or left
	Reason   string // of a leave: ReasonLeft or ReasonNodeGone
	Info     []byte // of a join: the info of the connection that joined
}

// ParsePresenceEvent reads a message of the presence events topic.
func ParsePresenceEvent(msg *message.Message) (PresenceEvent, error) {
	e := PresenceEvent{
		Type:     msg.Metadata.Get(MetadataPresence),
		Room:     msg.Metadata.Get(MetadataRoom),
		ClientID: msg.Metadata.Get(MetadataClient),
		Node:     msg.Metadata.Get(MetadataNode),
		Reason:   msg.Metadata.Get(MetadataReason),
	}
	if e.Type != PresenceJoin && e.Type != PresenceLeave {
		return PresenceEvent{}, fmt.Errorf("wsroute: message %s is not a presence event (%s is %q)", msg.UUID, MetadataPresence, e.Type)
	}
	if len(msg.Payload) > 0 {
		e.Info = msg.Payload
	}
	return e, nil
}

// PresenceTopic is the Redis stream the presence events are appended to
// (Config.PresenceEvents): Config.Prefix + "presence-events". Subscribe to
// it with redisbus' StreamsSubscriber (a consumer group to handle each
// event once in the cluster, fan-out for every node to see each).
func (n *Node) PresenceTopic() string { return n.keys.presenceEvents() }

var (
	//go:embed lua/presence_lib.lua
	presenceLib string
	//go:embed lua/presence_join.lua
	presenceJoinSource string
	//go:embed lua/presence_leave.lua
	presenceLeaveSource string
	//go:embed lua/presence_query.lua
	presenceQuerySource string
	//go:embed lua/presence_sweep.lua
	presenceSweepSource string

	// Each script is the library followed by its own part. They may be
	// sent again when a reply is lost: a second run finds its work done
	// and records no event twice.
	presenceJoinScript  = redis.NewScript(presenceLib + presenceJoinSource)
	presenceLeaveScript = redis.NewScript(presenceLib + presenceLeaveSource)
	presenceQueryScript = redis.NewScript(presenceLib + presenceQuerySource)
	presenceSweepScript = redis.NewScript(presenceLib + presenceSweepSource)
)

const (
	// defaultPresenceEventsMaxLen keeps room for consumers that fall
	// behind, in about 1.2 MB (measured with 32 bytes of info a join).
	defaultPresenceEventsMaxLen = 10_000
	// joinBatch bounds the connections one join script takes, so that
	// restoring a large room does not hold Redis for long (as reapBudget).
	joinBatch = 100
	// reapBudget is about how many entries of dead nodes one script
	// removes (recording the leaves) before it returns, so that a large
	// room of a dead node does not hold Redis for long: 1.5-3.4 ms
	// measured (BenchmarkPresence), 15-30 µs an entry with its event.
	reapBudget = 100
)

// eventsMaxLen is what the scripts take: 0 for no events.
func (n *Node) eventsMaxLen() int {
	if !n.config.PresenceEvents {
		return 0
	}
	return cmp.Or(n.config.PresenceEventsMaxLen, defaultPresenceEventsMaxLen)
}

// Presence returns the clients in room on every node, with their
// connections in it, sorted by client ID. It costs two round trips: a
// script that lists the room's live node incarnations (in proportion to
// the room's nodes), then plain reads of their entries (in proportion to
// the room's connections), never a scan of the registry. A node that died
// stops counting at once when its liveness key expires (NodeTTL); the
// script then removes a batch of its entries and records their leaves
// (the sweep removes the rest).
func (n *Node) Presence(ctx context.Context, room string) ([]Member, error) {
	if n.isClosing() {
		return nil, ErrClosed
	}
	fail := func(err error) ([]Member, error) {
		slotmap.Refresh(err, n.config.Client)
		return nil, fmt.Errorf("wsroute: presence of room %q: %w", room, err)
	}
	reply, err := presenceQueryScript.Run(ctx, n.config.Client, []string{n.keys.presence(room), n.keys.presenceEvents()},
		n.keys.prefix, room, reapBudget, n.eventsMaxLen(), watermill.NewUUID()).Slice()
	if err != nil {
		return fail(err)
	}
	if len(reply)%2 != 1 {
		return fail(fmt.Errorf("unexpected reply of %d values", len(reply)))
	}
	if removed, ok := reply[0].(int64); ok {
		n.stats.reaped.Add(uint64(removed))
	}
	type instance struct {
		node    string
		entries *redis.MapStringStringCmd
	}
	live := make([]instance, 0, len(reply)/2)
	if len(reply) > 1 {
		_, err = n.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i := 1; i < len(reply); i += 2 {
				incarnation, _ := reply[i].(string)
				node, _ := reply[i+1].(string)
				live = append(live, instance{node: node, entries: pipe.HGetAll(ctx, n.keys.presenceOf(incarnation, room))})
			}
			return nil
		})
		if err != nil {
			return fail(err)
		}
	}
	byClient := map[string]*Member{}
	for _, in := range live {
		for connection, value := range in.entries.Val() {
			client, info, ok := decodeEntry(value)
			if !ok {
				continue
			}
			m := byClient[client]
			if m == nil {
				m = &Member{ClientID: client}
				byClient[client] = m
			}
			c := MemberConnection{ID: connection, Node: in.node}
			if info != "" {
				c.Info = []byte(info)
			}
			m.Connections = append(m.Connections, c)
		}
	}
	members := make([]Member, 0, len(byClient))
	for _, m := range byClient {
		slices.SortFunc(m.Connections, func(a, b MemberConnection) int {
			return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.ID, b.ID))
		})
		members = append(members, *m)
	}
	slices.SortFunc(members, func(a, b Member) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return members, nil
}

// decodeEntry reads a presence entry: the client ID's length, a newline,
// the client ID, the info (see lua/presence_lib.lua).
func decodeEntry(value string) (client, info string, ok bool) {
	length, rest, found := strings.Cut(value, "\n")
	size, err := strconv.Atoi(length)
	if !found || err != nil || size < 0 || size > len(rest) {
		return "", "", false
	}
	return rest[:size], rest[size:], true
}

// member is a connection joining a room, with its info there.
type member struct {
	c    *localConn
	info []byte
}

// joinRoom writes connections of this node into a room, in batches. The
// caller holds the room's lock.
func (n *Node) joinRoom(ctx context.Context, room string, members []member) error {
	keys := []string{n.keys.presence(room), n.keys.presenceOf(n.incarnation, room), n.keys.presenceCount(room),
		n.keys.room(room), n.keys.roomsOf(n.incarnation), n.keys.incarnations(), n.keys.presenceEvents()}
	for batch := range slices.Chunk(members, joinBatch) {
		args := make([]any, 0, 6+3*len(batch))
		args = append(args, n.config.NodeID, n.incarnation, room, ms(n.config.RegistrationTTL), n.eventsMaxLen(), watermill.NewUUID())
		for _, m := range batch {
			args = append(args, m.c.id, m.c.clientID, m.info)
		}
		if err := presenceJoinScript.Run(ctx, n.config.Client, keys, args...).Err(); err != nil {
			slotmap.Refresh(err, n.config.Client)
			return err
		}
	}
	return nil
}

// sendLeave takes conns out of room in Redis, with the connections whose
// leave failed before (they are retried until Redis takes them), and takes
// the node out of the room when it has no member left. The caller holds
// the room's lock and has taken conns out of the room here.
func (n *Node) sendLeave(ctx context.Context, room string, conns []*localConn) error {
	n.mu.Lock()
	for c := range n.pendingLeaves[room] {
		conns = append(conns, c)
	}
	last := len(n.rooms[room]) == 0
	if len(conns) == 0 {
		delete(n.pendingLeaves, room) // its connections joined again
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()
	args := make([]any, 0, 7+len(conns))
	lastArg := "0"
	if last {
		lastArg = "1"
	}
	args = append(args, n.keys.prefix, n.config.NodeID, n.incarnation, room, n.eventsMaxLen(), watermill.NewUUID(), lastArg)
	for _, c := range conns {
		args = append(args, c.id)
	}
	err := presenceLeaveScript.Run(ctx, n.config.Client,
		[]string{n.keys.presence(room), n.keys.presenceOf(n.incarnation, room), n.keys.presenceEvents()}, args...).Err()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		// Left here, present in Redis: the client would show in the room
		// for as long as this node lives. Keep trying.
		slotmap.Refresh(err, n.config.Client)
		if n.pendingLeaves[room] == nil {
			n.pendingLeaves[room] = map[*localConn]bool{}
		}
		for _, c := range conns {
			n.pendingLeaves[room][c] = true
		}
		return err
	}
	delete(n.pendingLeaves, room)
	return nil
}

// maintainPresence retries the leaves Redis did not take and sweeps the
// presence of dead nodes, every NodeTTL/3: a dead node's members leave
// (and their leaves are recorded) at most NodeTTL + NodeTTL/3 after its
// last renewal, whether or not anyone asks who is in their rooms.
func (n *Node) maintainPresence() {
	ticker := time.NewTicker(n.config.NodeTTL / 3)
	defer ticker.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-ticker.C:
			n.retryLeaves()
			n.sweep()
		}
	}
}

func (n *Node) retryLeaves() {
	n.mu.Lock()
	rooms := make([]string, 0, len(n.pendingLeaves))
	for room := range n.pendingLeaves {
		rooms = append(rooms, room)
	}
	n.mu.Unlock()
	for _, room := range rooms {
		ctx, cancel := context.WithTimeout(context.Background(), n.config.NodeTTL)
		lock := n.roomLock(room)
		lock.Lock()
		err := n.sendLeave(ctx, room, nil)
		lock.Unlock()
		cancel()
		if err != nil {
			n.logger.Error("Cannot take connections out of a room's presence; will try again", err, watermill.LogFields{"room": room})
			return // Redis is not taking them now
		}
	}
}

// sweep runs the sweep script until it has nothing more to do, or another
// node holds the sweeper key.
func (n *Node) sweep() {
	hold := n.config.NodeTTL / 3
	for !n.isClosing() {
		ctx, cancel := context.WithTimeout(context.Background(), n.config.NodeTTL)
		out, err := presenceSweepScript.Run(ctx, n.config.Client,
			[]string{n.keys.incarnations(), n.keys.sweeper(), n.keys.presenceEvents()},
			n.keys.prefix, n.incarnation, ms(hold), reapBudget, n.eventsMaxLen(), watermill.NewUUID()).Int64Slice()
		cancel()
		if err != nil {
			slotmap.Refresh(err, n.config.Client)
			n.logger.Error("Cannot sweep the presence of dead nodes", err, nil)
			return
		}
		n.stats.reaped.Add(uint64(out[0]))
		if out[1] == 0 {
			return
		}
	}
}

// restoreRooms writes every local room membership again.
func (n *Node) restoreRooms(ctx context.Context) {
	for _, room := range n.localRooms() {
		lock := n.roomLock(room)
		lock.Lock()
		n.mu.Lock()
		members := make([]member, 0, len(n.rooms[room]))
		for c := range n.rooms[room] {
			members = append(members, member{c: c, info: c.rooms[room]})
		}
		n.mu.Unlock()
		var err error
		if len(members) > 0 {
			err = n.joinRoom(ctx, room, members)
		}
		lock.Unlock()
		if err != nil {
			n.logger.Error("Cannot restore a room", err, watermill.LogFields{"room": room, "members": strconv.Itoa(len(members))})
		}
	}
}
