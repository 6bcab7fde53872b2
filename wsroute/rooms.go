package wsroute

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// ErrNotConnected is returned by Join when the client has no connection on
// this node.
var ErrNotConnected = errors.New("wsroute: client has no connection on this node")

// Join adds every connection clientID has on this node to room. Membership
// belongs to connections: it ends when they close, and a client connected
// to two nodes joins on each separately. Redis learns only that this node
// has members, so a Broadcast reaches the nodes with members and no others.
func (n *Node) Join(ctx context.Context, clientID, room string) error {
	n.roomMu.Lock()
	defer n.roomMu.Unlock()
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
	first := len(n.rooms[room]) == 0
	if n.rooms[room] == nil {
		n.rooms[room] = map[*localConn]bool{}
	}
	for c := range conns {
		n.rooms[room][c] = true
		c.rooms[room] = true
	}
	n.mu.Unlock()
	if first {
		return n.registerRoom(ctx, room)
	}
	return nil
}

// Leave takes clientID's connections on this node out of room.
func (n *Node) Leave(ctx context.Context, clientID, room string) error {
	n.mu.Lock()
	conns := make([]*localConn, 0, len(n.clients[clientID]))
	for c := range n.clients[clientID] {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	for _, c := range conns {
		if err := n.leave(ctx, c, room); err != nil {
			return err
		}
	}
	return nil
}

// leave takes one connection out of room, and the node out of the room's
// entry when it was the last member here.
func (n *Node) leave(ctx context.Context, c *localConn, room string) error {
	n.roomMu.Lock()
	defer n.roomMu.Unlock()
	n.mu.Lock()
	members := n.rooms[room]
	if !members[c] {
		n.mu.Unlock()
		return nil
	}
	delete(members, c)
	delete(c.rooms, room)
	last := len(members) == 0
	if last {
		delete(n.rooms, room)
	}
	n.mu.Unlock()
	if !last {
		return nil
	}
	return releaseScript.Run(ctx, n.config.Client, []string{n.keys.room(room)}, n.config.NodeID, n.incarnation).Err()
}

// registerRoom records that this node has members in room.
func (n *Node) registerRoom(ctx context.Context, room string) error {
	key := n.keys.room(room)
	var hset *redis.IntCmd
	_, err := n.config.Client.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		hset = pipe.HSet(ctx, key, n.config.NodeID, n.incarnation)
		pipe.PExpire(ctx, key, n.config.RegistrationTTL)
		return nil
	})
	if redis.HasErrorPrefix(err, "EXECABORT") && hset.Err() != nil {
		// Redis refused a command of the transaction (OOM when full): say
		// which, rather than that the transaction was discarded.
		return hset.Err()
	}
	return err
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
