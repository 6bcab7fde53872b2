// Command redisbus-demo runs redisbus nodes that talk through Redis: each
// serves a page where a browser connects over WebSocket as a client (alice
// on the first node's page, bob on the second's), sends to clients on
// either node, talks in a room and sees who is in it, and publishes to a
// best-effort Pub/Sub topic and a reliable Streams topic. Its "drop my
// connection" button cuts the page's WebSocket for a few seconds and
// reconnects it (to the other node, when there are two): what was sent
// meanwhile arrives from the history, marked recovered (wsroute's
// wsroute.v1 protocol, spoken by the page with wsroute's JavaScript
// client, wsroute.ClientScript).
//
// Without -node it starts two nodes in this process (-addr-a and -addr-b
// set their listen addresses), on an embedded Redis (miniredis) unless
// REDIS_URL is set:
//
//	go run ./cmd/redisbus-demo
//	go run ./cmd/redisbus-demo -addr-a localhost:8081 -addr-b localhost:8082
//
// With REDIS_URL, -node runs one node per process, for a real multi-process
// (or multi-host) deployment:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./cmd/redisbus-demo -node a -addr :8081
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./cmd/redisbus-demo -node b -addr :8082
//
// Either way it prints each node's URL, runs a start-up check (Redis
// answers; every node hears every greeting over Pub/Sub; a message routed
// through Redis reaches a WebSocket client of each node) and serves until
// interrupted. -check runs the start-up check and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/listenurl"
	"github.com/redisbus/watermill-redisbus/internal/redisurl"
)

func main() {
	var o options
	flag.StringVar(&o.node, "node", "", "run one node with this name (needs REDIS_URL)")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:0", "listen address of the node started with -node")
	flag.StringVar(&o.addrA, "addr-a", "127.0.0.1:0", "listen address of the first node (two-node mode)")
	flag.StringVar(&o.addrB, "addr-b", "127.0.0.1:0", "listen address of the second node (two-node mode)")
	flag.DurationVar(&o.nodeTTL, "node-ttl", 10*time.Second, "how long a node counts as alive without a heartbeat")
	flag.BoolVar(&o.check, "check", false, "run the start-up check and exit")
	flag.Parse()
	o.redisURL = os.Getenv("REDIS_URL")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "redisbus-demo:", err)
		os.Exit(1)
	}
}

type options struct {
	redisURL           string
	node               string
	addr, addrA, addrB string
	nodeTTL            time.Duration
	check              bool
}

// run starts the nodes, prints their URLs, runs the start-up check and
// serves until ctx is done (or, with check, until the check passed). It
// prints its start-up lines in one order on every run.
func run(ctx context.Context, out io.Writer, o options) error {
	if o.node != "" && o.redisURL == "" {
		return errors.New("-node needs REDIS_URL: the nodes of separate processes must share a Redis")
	}
	if o.redisURL == "" {
		embedded, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer embedded.Close()
		o.redisURL = "redis://" + embedded.Addr()
		fmt.Fprintf(out, "REDIS_URL is not set: using an embedded Redis at %s\n", embedded.Addr())
	}
	opt, err := redisurl.Parse(o.redisURL)
	if err != nil {
		return err
	}
	if err := ping(ctx, opt); err != nil {
		return err
	}

	// Each page knows the other node (the drop button moves its connection
	// there), so both listen before either starts. A page of node-a is
	// alice's, one of node-b bob's, unless that name is in the room
	// already (then the page takes the first free one).
	configs := []nodeConfig{
		{Name: "node-a", Addr: o.addrA, Color: "#2563eb", User: "alice"},
		{Name: "node-b", Addr: o.addrB, Color: "#ea580c", User: "bob"},
	}
	if o.node != "" {
		configs = []nodeConfig{{Name: o.node, Addr: o.addr, Color: nodeColor(o.node)}}
	}
	for i := range configs {
		c := &configs[i]
		if c.Listener, err = net.Listen("tcp", c.Addr); err != nil {
			for _, started := range configs[:i] {
				_ = started.Listener.Close()
			}
			return err
		}
		c.URL = listenurl.HTTP(c.Addr, c.Listener.Addr())
	}
	var printMu sync.Mutex
	var nodes []*node
	for i, c := range configs {
		for j, peer := range configs {
			if j != i {
				c.Peers = append(c.Peers, nodeLink{Name: peer.Name, URL: peer.URL, Color: peer.Color})
			}
		}
		c.Redis, c.NodeTTL, c.Out = opt, o.nodeTTL, out
		n, err := startNode(ctx, c, &printMu)
		if err != nil {
			for _, later := range configs[i+1:] {
				_ = later.Listener.Close()
			}
			return fmt.Errorf("start %s: %w", c.Name, err)
		}
		defer n.close()
		nodes = append(nodes, n)
		n.printf("node %s listening on %s\n", n.name, n.url)
	}

	if err := startupCheck(ctx, nodes, opt); err != nil {
		return fmt.Errorf("start-up check: %w", err)
	}
	if o.check {
		return nil
	}
	for _, n := range nodes {
		n.printf("Prometheus metrics of %s: %s/metrics\n", n.name, n.url)
	}
	if len(nodes) == 1 {
		nodes[0].printf("open %s in a browser tab; a second node (the same REDIS_URL, another -node and -addr) serves a second tab; Ctrl-C stops\n", nodes[0].url)
	} else {
		nodes[0].printf("open %s and %s in two browser tabs; Ctrl-C stops\n", nodes[0].url, nodes[1].url)
	}
	<-ctx.Done()
	return nil
}

// ping fails, saying where, when Redis does not answer.
func ping(ctx context.Context, opt *redis.Options) error {
	client := redis.NewClient(opt)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("no answer from Redis at %s: %w", opt.Addr, err)
	}
	return nil
}

// startupCheck proves, before the nodes are announced ready, what the page
// relies on: each node's greeting, and a plain PUBLISH as a PHP or Python
// service would send, reach every node over Pub/Sub; and a message routed
// through Redis reaches a WebSocket client of each node (from the other
// node when there are two). It narrates in one order on every run.
func startupCheck(ctx context.Context, nodes []*node, opt *redis.Options) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	say := nodes[0].printf
	say("start-up check: Redis at %s answers\n", opt.Addr)

	var senders []string
	for _, n := range nodes {
		receivers, err := n.greet(ctx)
		if err != nil {
			return err
		}
		say("start-up check: %s's greeting reached %d node(s) over Pub/Sub\n", n.name, receivers)
		senders = append(senders, n.name)
	}
	foreign := redis.NewClient(opt)
	defer foreign.Close()
	if err := foreign.Publish(ctx, greetingTopic, "hello from a PHP service").Err(); err != nil {
		return err
	}
	senders = append(senders, foreignProducer)
	for _, n := range nodes {
		if err := n.awaitGreetings(ctx, senders); err != nil {
			return err
		}
		say("start-up check: %s heard the greetings of %s\n", n.name, list(senders))
	}

	for i, n := range nodes {
		sender := nodes[(i+1)%len(nodes)]
		if err := n.checkRoute(ctx, sender); err != nil {
			return err
		}
		if sender == n {
			say("start-up check: %s routed a message through Redis to a WebSocket client of its own\n", n.name)
		} else {
			say("start-up check: %s routed a message through Redis to a WebSocket client of %s\n", sender.name, n.name)
		}
	}
	for _, n := range nodes {
		n.ready.Store(true)
	}
	if len(nodes) == 1 {
		say("start-up check passed: node %s is ready\n", nodes[0].name)
	} else {
		say("start-up check passed: both nodes hear each other through Redis\n")
	}
	return nil
}

// nodeColor gives a node started with -node a colour of its own, the same
// in every run and on every page.
func nodeColor(name string) string {
	palette := []string{"#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2"}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return palette[h.Sum32()%uint32(len(palette))]
}

// list joins names as a sentence does: "a", "a and b", "a, b and c".
func list(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
