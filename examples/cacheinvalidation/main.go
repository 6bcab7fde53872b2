// Command cacheinvalidation runs three nodes that each keep a local L1
// cache of records stored in Redis, with redisbus' localcache. When one
// node writes a record, it publishes an invalidation; the other nodes
// evict their copy and read the new value on the next Get. A node whose
// subscription to the invalidations drops serves nothing from its cache
// until it is back, and then starts afresh, so that it never serves a
// value whose invalidation it missed.
//
//	go run ./examples/cacheinvalidation                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/cacheinvalidation
//
// It prints the same lines on every run:
//
//	node-1 caches product:42:price = 9.99
//	node-2 caches product:42:price = 9.99
//	node-3 caches product:42:price = 9.99
//	node-1 sets product:42:price = 12.49
//	node-2 evicted product:42:price
//	node-3 evicted product:42:price
//	node-1 reads product:42:price = 12.49
//	node-2 reads product:42:price = 12.49
//	node-3 reads product:42:price = 12.49
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/redisurl"
)

// record is the record the nodes cache.
const record = "product:42:price"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Getenv("REDIS_URL")); err != nil {
		fmt.Fprintln(os.Stderr, "cacheinvalidation:", err)
		os.Exit(1)
	}
}

// run has three nodes cache the record, one write it, and each read it
// again; it deletes the record at the end.
func run(ctx context.Context, out io.Writer, redisURL string) error {
	if redisURL == "" {
		embedded, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer embedded.Close()
		redisURL = "redis://" + embedded.Addr()
	}
	opt, err := redisurl.Parse(redisURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	// An application's records have their keys for good. This program
	// runs against your Redis for a moment, so each run stores the record
	// under a key of its own (it prints the record's name) and deletes it
	// at the end: every run prints the same lines, and no key of yours is
	// touched.
	key := "cacheinvalidation-example:" + watermill.NewShortUUID() + ":" + record
	store := redis.NewClient(opt)
	defer store.Close()
	defer store.Del(context.WithoutCancel(ctx), key)
	if err := store.Set(ctx, key, "9.99", 0).Err(); err != nil {
		return err
	}

	var nodes []*Node
	for _, name := range []string{"node-1", "node-2", "node-3"} {
		n, err := StartNode(ctx, name, opt)
		if err != nil {
			return err
		}
		defer n.Close()
		nodes = append(nodes, n)
	}

	for _, n := range nodes {
		price, err := n.Get(ctx, key)
		if err != nil {
			return err
		}
		if !n.Cached(key) {
			return fmt.Errorf("%s did not cache %s", n.Name, record)
		}
		fmt.Fprintf(out, "%s caches %s = %s\n", n.Name, record, price)
	}

	fmt.Fprintf(out, "%s sets %s = 12.49\n", nodes[0].Name, record)
	if err := nodes[0].Set(ctx, key, "12.49"); err != nil {
		return err
	}
	// The invalidation reaches the other nodes within a millisecond or
	// so; Sync waits for it, so that every run prints the same lines.
	for _, n := range nodes[1:] {
		if err := n.Sync(ctx); err != nil {
			return err
		}
		if n.Cached(key) {
			return fmt.Errorf("%s still caches %s", n.Name, record)
		}
		fmt.Fprintf(out, "%s evicted %s\n", n.Name, record)
	}

	for _, n := range nodes {
		price, err := n.Get(ctx, key)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s reads %s = %s\n", n.Name, record, price)
	}
	return nil
}
