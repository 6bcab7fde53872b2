// Package wsroute delivers WebSocket messages across nodes: N servers
// behind a load balancer, a client connected to any of them, and a message
// for that client produced on any other. Redis is the routing fabric.
//
//	alice ══ws══▶ node A                               node B ══ws══▶ bob
//	              │ Serve: registers alice              ▲ Serve: registers bob
//	              │ a frame → Router handler            │ checks the connection is here,
//	              │ → SendToClient("bob")               │ queues, one writer per socket
//	              ▼                                     │
//	      ┌─────────────────────── Redis ───────────────┴──────────┐
//	      │ EVAL route.lua (one round trip):                       │
//	      │   client:bob = {connection → B, incarnation}           │
//	      │   node:B == incarnation? (liveness key, NodeTTL)       │
//	      │   PUBLISH to:B  ─────────────────────────────────────▶ │
//	      └────────────────────────────────────────────────────────┘
//
// Each node registers its connections (client ID → connection ID → node)
// and keeps a short-lived liveness key. Routing is one Lua
// script: it looks the recipient up, drops entries whose node is dead, and
// publishes one message per live node on that node's channel — so a
// message goes only to the nodes that need it. The node holding the socket
// checks the connection is still there, queues the message on the
// connection's bounded send queue, and one writer goroutine per connection
// writes it. Rooms work the same way, with Redis knowing only which nodes
// have members. On Redis Cluster the node channels are shard channels in
// the registry's slot (SPUBLISH, SSUBSCRIBE), so that the script counts
// the listening nodes wherever they subscribed, and the subscriptions
// follow the slot when it moves.
//
// Presence says who is in a room on every node, with each client's
// connections and the info they joined with, in one round trip that reads
// the room's entries only. Joins and leaves of clients (not of each
// connection) can be recorded on a Redis stream, by the same atomic script
// that changes the room, so that each is recorded once in the cluster; a
// dead node's members leave once its liveness key expires, noticed by the
// next query or by a sweep of dead nodes.
//
// Delivery over node channels is redisbus' best-effort Pub/Sub: a message
// in flight when a node's subscription drops is lost (the loss is logged by
// the subscriber), and so is a message to a client between its
// disconnection and its reconnection elsewhere — unless it is kept in a
// history (Config.History, WithHistory). A kept message has an offset in
// its client's or room's stream, in the same round trip as its routing; a
// client of the wsroute.v1 protocol (see Subprotocol, the JavaScript client
// ClientScript serves, and docs/wsroute-protocol.md) presents its last
// positions when it reconnects, to any node, and gets what it missed, in
// order and once, then the live stream with no gap at the seam, or is told
// that it cannot ("recovered": false, and why).
package wsroute
