package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/redisbus/watermill-redisbus/wsroute"
)

// wsrouteLatency measures SendToClient on one node to a WebSocket client of
// another: Lua lookup and PUBLISH, the other node's subscription, its send
// queue and writer, a real WebSocket.
func wsrouteLatency(ctx context.Context, e *env, perSecond int, duration time.Duration, size int) (sample, error) {
	s := sample{contender: cWSRoute, family: "wsroute", workload: fmt.Sprintf("latency at %d msg/s", perSecond), size: size}
	n := int(float64(perSecond) * duration.Seconds())
	prefix := fmt.Sprintf("bench-wsroute-%d:", time.Now().UnixNano())

	var nodes []*wsroute.Node
	for _, name := range []string{"a", "b"} {
		client := e.client(false)
		defer client.Close()
		node, err := wsroute.NewNode(wsroute.Config{Client: client, NodeID: name, Prefix: prefix, SendQueueSize: n}, nil)
		if err != nil {
			return s, err
		}
		defer node.Close()
		nodes = append(nodes, node)
	}
	handler, err := nodes[1].Handler(wsroute.HandlerConfig{
		Authenticate: func(*http.Request) (string, error) { return "bob", nil },
	})
	if err != nil {
		return s, err
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(listener) }()
	defer server.Close()

	ws, _, err := websocket.Dial(ctx, "ws://"+listener.Addr().String(), nil)
	if err != nil {
		return s, err
	}
	defer ws.CloseNow()

	t := newTracker(n)
	log := &latencyLog{}
	read := make(chan error, 1)
	go func() {
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				read <- err
				return
			}
			if len(data) >= 16 {
				log.add(time.Since(sentAt(data)))
				t.record(data)
			}
		}
	}()
	// Wait until bob is registered on node b.
	deadline := time.Now().Add(10 * time.Second)
	for {
		result, err := nodes[0].SendToClient(ctx, "bob", []byte("probe"))
		if err != nil {
			return s, err
		}
		if result.Status == wsroute.Delivered {
			break
		}
		if time.Now().After(deadline) {
			return s, errors.New("bob never registered")
		}
		time.Sleep(10 * time.Millisecond)
	}

	err = openLoop(ctx, perSecond, n, func(i int) error {
		p := payload(i, size)
		stamp(p)
		result, err := nodes[0].SendToClient(ctx, "bob", p)
		if err == nil && result.Status != wsroute.Delivered {
			err = fmt.Errorf("message %d: %s", i, result.Status)
		}
		return err
	})
	if err == nil {
		err = t.wait(ctx, workloadTimeout)
	}
	t.tally(&s)
	if err != nil {
		return s, fmt.Errorf("%w (node b: %+v)", err, nodes[1].Stats())
	}
	s.p50, s.p99, s.p999, err = log.percentiles()
	return s, err
}
