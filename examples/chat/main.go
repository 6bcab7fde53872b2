// Command chat is a chat server to copy: browsers connect over WebSocket,
// join rooms and talk, and what one says in a room reaches every member,
// whichever node (process, host) each is connected to. chat.go is the
// server (wsroute for the sockets and rooms, a Watermill Router for what
// clients send); this file starts nodes.
//
// Without REDIS_URL it starts an embedded Redis and two nodes in this
// process, on localhost:8081 and localhost:8082:
//
//	go run ./examples/chat
//
// With your own Redis, run one node per process (or host), each with its
// own -addr:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/chat -addr localhost:8081
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/chat -addr localhost:8082
//
// Open each node's URL in a browser tab, connect as a different name in
// each, join the same room in both and talk.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/listenurl"
	"github.com/redisbus/watermill-redisbus/internal/redisurl"
)

func main() {
	addrs := flag.String("addr", "", "listen addresses, comma-separated, one node each (default localhost:8081 with REDIS_URL; localhost:8081,localhost:8082 without, as an embedded Redis serves only this process)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var list []string
	if *addrs != "" {
		list = strings.Split(*addrs, ",")
	}
	if err := run(ctx, os.Stdout, os.Getenv("REDIS_URL"), list, nil); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

// run starts one chat node per address, prints their URLs, calls started
// (if not nil) with them, and serves until ctx is done.
func run(ctx context.Context, out io.Writer, redisURL string, addrs []string, started func(urls []string)) error {
	if redisURL == "" {
		if len(addrs) == 0 {
			addrs = []string{"localhost:8081", "localhost:8082"}
		}
		embedded, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer embedded.Close()
		redisURL = "redis://" + embedded.Addr()
		fmt.Fprintln(out, "REDIS_URL is not set: using an embedded Redis, which only the nodes of this process can share")
	}
	if len(addrs) == 0 {
		addrs = []string{"localhost:8081"}
	}
	opt, err := redisurl.Parse(redisURL)
	if err != nil {
		return err
	}
	client := redis.NewClient(opt)
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("cannot reach Redis at %s: %w", redisurl.Redact(redisURL), err)
	}

	host, err := os.Hostname()
	if err != nil {
		host = "chat"
	}
	var urls []string
	for _, addr := range addrs {
		addr = strings.TrimSpace(addr)
		listener, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		// Node IDs must be unique among live nodes: the host and port are.
		nodeID := host + ":" + strconv.Itoa(listenurl.Port(listener.Addr()))
		server, err := NewServer(ctx, client, nodeID)
		if err != nil {
			_ = listener.Close()
			return err
		}
		defer server.Close()
		httpServer := &http.Server{Handler: server, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = httpServer.Serve(listener) }()
		defer shutdown(httpServer)
		url := listenurl.HTTP(addr, listener.Addr())
		urls = append(urls, url)
		fmt.Fprintf(out, "chat node %s serving %s\n", nodeID, url)
	}
	if len(urls) == 1 {
		fmt.Fprintf(out, "open %s in a browser tab; start a second node with the same REDIS_URL and another -addr, open it in another tab, join one room in both and talk; Ctrl-C stops\n", urls[0])
	} else {
		fmt.Fprintf(out, "open %s in one browser tab each, join one room in each and talk; Ctrl-C stops\n", strings.Join(urls, " and "))
	}
	if started != nil {
		started(urls)
	}
	<-ctx.Done()
	return nil
}

// shutdown stops serving HTTP. WebSockets are hijacked connections, which
// the chat server's Close ends.
func shutdown(server *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = server.Shutdown(ctx)
}
