package wsroute

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
)

// ErrNotConnected is returned by Join when the client has no connection on
// this node.
var ErrNotConnected = errors.New("wsroute: client has no connection on this node")

// Join adds every connection clientID has on this node to room. Membership
// belongs to connections: it ends when they leave or close, and a client
// connected to two nodes joins on each separately. Redis learns which
// nodes have members, so that a Broadcast reaches those nodes and no
// others, and which connections are members, for Presence. The first
// connection of a client in a room, on any node, records a join (see
// Config.PresenceEvents). An error means the connections are not members:
// the node takes back whatever of the join reached Redis.
func (n *Node) Join(ctx context.Context, clientID, room string) error {
	return n.JoinWithInfo(ctx, clientID, room, nil)
}

// JoinWithInfo is Join with info that Presence shows for these connections
// (a display name, a device, a role in the room), at most
// MaxPresenceInfoSize bytes; a join event carries it too. Joining again
// replaces the info of the connections already in the room, and records no
// event.
func (n *Node) JoinWithInfo(ctx context.Context, clientID, room string, info []byte) error {
	if len(info) > MaxPresenceInfoSize {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrPresenceInfoTooBig, len(info), MaxPresenceInfoSize)
	}
	info = slices.Clone(info)
	lock := n.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	conns := n.clients[clientID]
	if len(conns) == 0 {
		n.mu.Unlock()
		return ErrNotConnected
	}
	if n.rooms[room] == nil {
		n.rooms[room] = map[*localConn]bool{}
	}
	members := make([]member, 0, len(conns))
	var added []*localConn
	following := map[*localConn]*followed{}
	for c := range conns {
		if !n.rooms[room][c] {
			added = append(added, c)
			// Broadcasts reach it from here on: they wait for the
			// room's history to be read.
			if c.follows("room", room) {
				c.mu.Lock()
				following[c] = c.startFollowing(streamName("room", room))
				c.mu.Unlock()
			}
		}
		n.rooms[room][c] = true
		c.rooms[room] = info
		delete(n.pendingLeaves[room], c) // a leave retried now would undo this join
		members = append(members, member{c: c, info: info})
	}
	n.mu.Unlock()
	err := n.joinRoom(ctx, room, members)
	if err != nil {
		// Redis may have run the script and lost only its reply: take back
		// the connections this call added, here and (now or later) there.
		n.mu.Lock()
		n.dropMembers(room, added, false)
		n.mu.Unlock()
		_ = n.sendLeave(ctx, room, added)
		return fmt.Errorf("wsroute: join room %q: %w", room, err)
	}
	// In the room in Redis: every broadcast from now on reaches this
	// node, so the history read next misses none.
	for c, st := range following {
		c.startFilling(streamName("room", room), st)
	}
	return nil
}

// Leave takes clientID's connections on this node out of room. An error
// means Redis did not take it: they are out of the room here (they get no
// broadcast), and the node keeps trying until Presence no longer shows
// them.
func (n *Node) Leave(ctx context.Context, clientID, room string) error {
	lock := n.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	n.mu.Lock()
	var leaving []*localConn
	for c := range n.clients[clientID] {
		if n.rooms[room][c] {
			leaving = append(leaving, c)
		}
	}
	n.dropMembers(room, leaving, true)
	n.mu.Unlock()
	if len(leaving) == 0 {
		return nil
	}
	if err := n.sendLeave(ctx, room, leaving); err != nil {
		return fmt.Errorf("wsroute: leave room %q: %w", room, err)
	}
	return nil
}

// leave takes one connection out of room, here and in Redis.
func (n *Node) leave(ctx context.Context, c *localConn, room string) error {
	lock := n.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	n.mu.Lock()
	if !n.rooms[room][c] {
		n.mu.Unlock()
		return nil
	}
	n.dropMembers(room, []*localConn{c}, true)
	n.mu.Unlock()
	return n.sendLeave(ctx, room, []*localConn{c})
}

// dropMembers takes conns out of room here, telling framed ones that
// they left (tell; not for a join taken back, which never began). The
// caller holds n.mu.
func (n *Node) dropMembers(room string, conns []*localConn, tell bool) {
	members := n.rooms[room]
	for _, c := range conns {
		delete(members, c)
		delete(c.rooms, room)
		c.mu.Lock()
		delete(c.streams, streamName("room", room)) // a filler of it stops
		if tell && c.framed && !c.closed {
			// Its position in the room means nothing any more: a later join
			// starts afresh, and must not be compared with it.
			c.queueLocked(encodeLeft(streamName("room", room)), true)
		}
		c.mu.Unlock()
	}
	if len(members) == 0 {
		delete(n.rooms, room)
	}
}

// roomLocks order a room's joins and leaves in Redis as they happen here,
// while different rooms proceed at once: a lock per room would need a map
// that grows with them, one lock for all would make every join wait for
// every other.
type roomLocks struct {
	seed  maphash.Seed
	locks [64]sync.Mutex
}

func (n *Node) roomLock(room string) *sync.Mutex {
	l := &n.roomLocks
	return &l.locks[maphash.String(l.seed, room)%uint64(len(l.locks))]
}

func (n *Node) localRooms() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	rooms := make([]string, 0, len(n.rooms))
	for room := range n.rooms {
		rooms = append(rooms, room)
	}
	return rooms
}
