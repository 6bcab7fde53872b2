// Command cacheinvalidation runs three nodes that each keep a local L1
// cache of records stored in Redis. When one node writes a record, it
// publishes an invalidation with redisbus; the other nodes evict their copy
// and read the new value on the next Get.
//
//	go run ./examples/cacheinvalidation                 # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/cacheinvalidation
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/redisurl"
)

func main() {
	if err := run(context.Background(), os.Stdout, os.Getenv("REDIS_URL"), "product:42:price"); err != nil {
		fmt.Fprintln(os.Stderr, "cacheinvalidation:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, redisURL, key string) error {
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

	store := redis.NewClient(opt)
	defer store.Close()
	if err := store.Set(ctx, key, "9.99", 0).Err(); err != nil {
		return err
	}

	// Evictions happen on the nodes' handler goroutines.
	var outMu sync.Mutex
	var evictions sync.WaitGroup
	onEvict := func(n *Node, evicted string) {
		if evicted != key {
			return // another program's invalidation, on a shared Redis
		}
		outMu.Lock()
		fmt.Fprintf(out, "%s evicted %s\n", n.Name, key)
		outMu.Unlock()
		evictions.Done()
	}
	var nodes []*Node
	for _, name := range []string{"node-1", "node-2", "node-3"} {
		n, err := StartNode(ctx, name, opt, onEvict)
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
		fmt.Fprintf(out, "%s caches %s = %s\n", n.Name, key, price)
	}

	fmt.Fprintf(out, "%s sets %s = 12.49\n", nodes[0].Name, key)
	evictions.Add(len(nodes) - 1)
	if err := nodes[0].Set(ctx, key, "12.49"); err != nil {
		return err
	}
	evicted := make(chan struct{})
	go func() { evictions.Wait(); close(evicted) }()
	select {
	case <-evicted:
	case <-ctx.Done():
		return fmt.Errorf("not every node evicted %s: %w", key, ctx.Err())
	}

	for _, n := range nodes {
		price, err := n.Get(ctx, key)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s reads %s = %s\n", n.Name, key, price)
	}
	return nil
}
