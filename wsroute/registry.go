package wsroute

import (
	"context"
	_ "embed"
	"errors"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/sendonce"
	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// The registry lives in Redis:
//
//	<prefix>node:<node>     string: the node's incarnation, expiring after NodeTTL
//	<prefix>client:<client> hash: connection ID -> "node\nincarnation"
//	<prefix>room:<room>     hash: node -> incarnation, for nodes with members
//	<prefix>to:<node>       channel: messages routed to the node
//	<prefix>all             channel: messages for every node
//
// and each room's presence (see lua/presence_lib.lua):
//
//	<prefix>presence:<room>                  hash: incarnation -> node, of the nodes with members
//	<prefix>presence-of:<incarnation>:<room> hash: connection ID -> client, info
//	<prefix>presence-count:<room>            hash: client ID -> its connections in the room
//	<prefix>rooms-of:<incarnation>           hash: room -> "", where the node has members
//	<prefix>incarnations                     hash: incarnation -> node, of nodes with rooms
//	<prefix>sweeper                          string: the incarnation sweeping dead nodes' presence now
//	<prefix>presence-events                  stream: joins and leaves (Config.PresenceEvents)
//
// An incarnation is a UUID, so presence-of keys of different rooms never
// meet.
//
// An entry counts only while its node's liveness key holds the incarnation
// it names, so a node's entries die with it, within NodeTTL, whatever
// their own expiry.
//
// A connection ID is a fresh random UUID, made by the node that holds the
// connection and never registered by another, so it fences on its own: a
// message routed to a connection that has closed names an ID that no
// connection will have again, and is dropped (Stats.Fenced), however soon
// its client reconnects, on the same node or another. A generation counter
// per client used to sit beside it; it told apart only registrations of one
// connection ID, which are all one connection's.
type keys struct{ prefix string }

func (k keys) node(id string) string        { return k.prefix + "node:" + id }
func (k keys) client(id string) string      { return k.prefix + "client:" + id }
func (k keys) room(name string) string      { return k.prefix + "room:" + name }
func (k keys) nodeChannel(id string) string { return k.prefix + "to:" + id }
func (k keys) allChannel() string           { return k.prefix + "all" }
func (k keys) presence(room string) string  { return k.prefix + "presence:" + room }
func (k keys) presenceOf(incarnation, room string) string {
	return k.prefix + "presence-of:" + incarnation + ":" + room
}
func (k keys) presenceCount(room string) string {
	return k.prefix + "presence-count:" + room
}
func (k keys) roomsOf(incarnation string) string { return k.prefix + "rooms-of:" + incarnation }
func (k keys) incarnations() string              { return k.prefix + "incarnations" }
func (k keys) sweeper() string                   { return k.prefix + "sweeper" }
func (k keys) presenceEvents() string            { return k.prefix + "presence-events" }
func ms(d time.Duration) string                  { return strconv.FormatInt(d.Milliseconds(), 10) }
func entry(node, incarnation string) string      { return node + "\n" + incarnation }

var (
	//go:embed lua/register.lua
	registerSource string
	registerScript = redis.NewScript(registerSource)

	//go:embed lua/release.lua
	releaseSource string
	releaseScript = redis.NewScript(releaseSource)

	//go:embed lua/route.lua
	routeSource string
	// renewWhenFullScript is the liveness renewal for a Redis out of
	// memory (Redis 7.0+ runs a script flagged allow-oom then).
	renewWhenFullScript = redis.NewScript("#!lua flags=allow-oom\n" +
		"return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GET')")

	// routeScript publishes: go-redis must not send it twice (see sendonce).
	routeScript = sendonce.NewScript(historyLib + routeSource)

	//go:embed lua/expire_node.lua
	expireNodeSource string
	expireNodeScript = redis.NewScript(expireNodeSource)
)

// Errors of the logs that report a conflict or a lapse, so that a log line
// at error level says what went wrong instead of err=<nil>.
var (
	errNodeIDInUse    = errors.New("liveness key held by another incarnation of this node ID")
	errLivenessLapsed = errors.New("liveness key had expired")
)

// register records a local connection, unless its client has limit live
// connections registered already (limit <= 0: no bound), and reports
// whether it did.
func (n *Node) register(ctx context.Context, c *localConn, limit int) (bool, error) {
	registered, err := registerScript.Run(ctx, n.config.Client, []string{n.keys.client(c.clientID)},
		n.keys.prefix, c.id, entry(n.config.NodeID, n.incarnation), ms(n.config.RegistrationTTL), max(limit, 0)).Int()
	return registered == 1, err
}

// release removes a local connection's entry if it is still its own.
func (n *Node) release(ctx context.Context, c *localConn) error {
	return releaseScript.Run(ctx, n.config.Client, []string{n.keys.client(c.clientID)},
		c.id, entry(n.config.NodeID, n.incarnation)).Err()
}

// renewLiveness sets the liveness key and reports whether it had expired
// (or never existed) before. When Redis is out of memory (maxmemory with
// noeviction refuses SET), it renews through renewWhenFullScript: the key
// replaces itself, so it takes no more room, and a node that still
// publishes and receives must not read as Offline for want of it.
func (n *Node) renewLiveness(ctx context.Context) (lapsed bool, err error) {
	key := n.keys.node(n.config.NodeID)
	prev, err := n.config.Client.SetArgs(ctx, key, n.incarnation,
		redis.SetArgs{TTL: n.config.NodeTTL, Get: true}).Result()
	if redis.IsOOMError(err) {
		prev, err = renewWhenFullScript.Run(ctx, n.config.Client, []string{key}, n.incarnation, ms(n.config.NodeTTL)).Text()
	}
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if prev != n.incarnation {
		n.logger.Error("Another process uses this node ID; routing to both is unreliable", errNodeIDInUse,
			watermill.LogFields{"other_incarnation": prev})
	}
	return false, nil
}

// heartbeat renews the liveness key every NodeTTL/3 and the registrations
// every RegistrationTTL/3, and writes the registrations again when they
// may have been lost: after Redis restarted empty, when the node could not
// reach it for longer than NodeTTL, or when its channel subscription was
// down (senders then reap its entries as unreachable).
func (n *Node) heartbeat() {
	live := time.NewTicker(n.config.NodeTTL / 3)
	defer live.Stop()
	// The histories' meta keys of the streams local connections follow
	// are renewed with the registrations, so MetaTTL bounds this too.
	refresh := time.NewTicker(min(n.config.RegistrationTTL, n.config.History.MetaTTL) / 3)
	defer refresh.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-live.C:
			ctx, cancel := context.WithTimeout(context.Background(), n.config.NodeTTL/3)
			lapsed, err := n.renewLiveness(ctx)
			cancel()
			if err != nil {
				slotmap.Refresh(err, n.config.Client) // the master may have failed over
				n.stats.livenessFailed.Add(1)
			} else {
				n.stats.livenessRenewed.Add(1)
			}
			switch {
			case err != nil:
				n.logger.Error("Cannot renew node liveness; once NodeTTL passes, senders see this node's clients as Offline", err, nil)
			case lapsed:
				n.logger.Error("Node liveness had lapsed; registering every connection and room again", errLivenessLapsed, nil)
				n.restore()
				n.catchUpAll() // senders found this node's clients Offline meanwhile
			}
		case <-n.restoreNow:
			n.logger.Info("Node channel was not listened to for a while; registering every connection and room again", nil)
			// A failover may have lost the last renewal too: until the
			// next one, senders would see this node's clients Offline.
			ctx, cancel := context.WithTimeout(context.Background(), n.config.NodeTTL/3)
			if _, err := n.renewLiveness(ctx); err != nil {
				slotmap.Refresh(err, n.config.Client)
			}
			cancel()
			n.restore()
			// Registered again: what was routed while the node was
			// not listening is in the histories.
			n.catchUpAll()
		case <-refresh.C:
			n.refresh()
		}
	}
}

func signalRestore(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// restore writes every local registration again.
func (n *Node) restore() {
	n.stats.registrationsRestored.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), n.config.NodeTTL)
	defer cancel()
	for _, c := range n.localConns() {
		// Without the bound: these connections were let in already, and
		// a restore must not leave one open and unregistered.
		if _, err := n.register(ctx, c, 0); err != nil {
			slotmap.Refresh(err, n.config.Client)
			n.logger.Error("Cannot restore a registration", err, watermill.LogFields{"client": c.clientID})
			continue
		}
		// The connection may have closed and released its entry while
		// this wrote it again: release it once more, or it would read as
		// Delivered until RegistrationTTL.
		if c.removed.Load() {
			if err := n.release(ctx, c); err != nil {
				n.logger.Error("Cannot remove a registration", err, watermill.LogFields{"client": c.clientID})
			}
		}
	}
	n.restoreRooms(ctx)
}

// refresh extends the expiry of the client, room and presence entries
// this node holds, and of the meta keys of the histories its connections
// follow, in one pipeline.
func (n *Node) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), n.config.NodeTTL)
	defer cancel()
	_, err := n.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, c := range n.localConns() {
			pipe.PExpire(ctx, n.keys.client(c.clientID), n.config.RegistrationTTL)
			// A client connected keeps its position valid: MetaTTL counts
			// from the last message or connection.
			for _, stream := range c.followedStreams() {
				kind, name := c.streamKey(stream)
				pipe.PExpire(ctx, n.keys.historyMeta(kind, name), n.config.History.MetaTTL)
			}
		}
		rooms := n.localRooms()
		for _, room := range rooms {
			pipe.PExpire(ctx, n.keys.room(room), n.config.RegistrationTTL)
			pipe.PExpire(ctx, n.keys.presence(room), n.config.RegistrationTTL)
			pipe.PExpire(ctx, n.keys.presenceOf(n.incarnation, room), n.config.RegistrationTTL)
			pipe.PExpire(ctx, n.keys.presenceCount(room), n.config.RegistrationTTL)
		}
		if len(rooms) > 0 {
			pipe.PExpire(ctx, n.keys.roomsOf(n.incarnation), n.config.RegistrationTTL)
			pipe.PExpire(ctx, n.keys.incarnations(), n.config.RegistrationTTL)
		}
		return nil
	})
	if err != nil {
		slotmap.Refresh(err, n.config.Client)
		n.logger.Error("Cannot refresh registrations", err, nil)
	}
}
