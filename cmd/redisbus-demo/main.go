// Command redisbus-demo runs redisbus nodes that talk through Redis: each
// serves a page where a browser connects over WebSocket as a client, sends
// to clients on either node, joins rooms, and publishes to a best-effort
// Pub/Sub topic and a reliable Streams topic.
//
// Without REDIS_URL it starts an embedded Redis (miniredis) and two nodes
// in this process, prints both URLs, checks that the nodes hear each other
// and serves until interrupted:
//
//	go run ./cmd/redisbus-demo
//
// With REDIS_URL, -node runs one node per process, for a real multi-process
// (or multi-host) deployment:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./cmd/redisbus-demo -node a -addr :8081
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./cmd/redisbus-demo -node b -addr :8082
//
// -check runs the start-up check and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

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

// run starts the nodes, prints their URLs and serves until ctx is done (or,
// with check, until the start-up check passed).
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

	configs := []nodeConfig{{Name: "node-a", Addr: o.addrA}, {Name: "node-b", Addr: o.addrB}}
	if o.node != "" {
		configs = []nodeConfig{{Name: o.node, Addr: o.addr}}
	}
	var printMu sync.Mutex
	var nodes []*node
	for _, c := range configs {
		c.Redis, c.NodeTTL, c.Out = opt, o.nodeTTL, out
		n, err := startNode(ctx, c, &printMu)
		if err != nil {
			return fmt.Errorf("start %s: %w", c.Name, err)
		}
		defer n.close()
		nodes = append(nodes, n)
		printMu.Lock()
		fmt.Fprintf(out, "node %s listening on %s\n", n.name, n.url)
		printMu.Unlock()
	}

	if len(nodes) == 2 {
		if err := startupCheck(ctx, nodes, opt); err != nil {
			return err
		}
	}
	if o.check {
		return nil
	}
	printMu.Lock()
	fmt.Fprintln(out, "open the URLs above in two browser tabs; Ctrl-C stops")
	printMu.Unlock()
	<-ctx.Done()
	return nil
}

// startupCheck has each node greet the other, and a foreign producer (a
// plain PUBLISH, as a PHP or Python service would send) greet both, and
// returns when every greeting has crossed.
func startupCheck(ctx context.Context, nodes []*node, opt *redis.Options) error {
	for _, n := range nodes {
		receivers, err := n.greet(ctx)
		if err != nil {
			return err
		}
		n.printf("%s published a greeting (Redis delivered it to %d subscribers)\n", n.name, receivers)
	}
	foreign := redis.NewClient(opt)
	defer foreign.Close()
	if err := foreign.Publish(ctx, greetingTopic, "hello from a PHP service").Err(); err != nil {
		return err
	}
	timeout := time.After(10 * time.Second)
	for _, n := range nodes {
		for heard := 0; heard < len(nodes); heard++ { // the other node and the foreign producer
			select {
			case <-n.greeted:
			case <-ctx.Done():
				return ctx.Err()
			case <-timeout:
				return fmt.Errorf("%s did not hear every greeting", n.name)
			}
		}
	}
	nodes[0].printf("start-up check passed: both nodes hear each other through Redis\n")
	return nil
}
