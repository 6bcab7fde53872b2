package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"

	"github.com/redisbus/watermill-redisbus/wsroute"
)

// wsrouteBench is two nodes on one Redis, bob connected to node b over a
// real WebSocket: with history, a wsroute.v1 connection (JSON envelopes
// with offsets, the payload base64-encoded when it is binary, as the
// benchmark's stamped payloads are).
type wsrouteBench struct {
	nodes  []*wsroute.Node
	server *http.Server
	url    string
}

func startWSRoute(e *env, history bool, sendQueue int) (*wsrouteBench, error) {
	w := &wsrouteBench{}
	prefix := fmt.Sprintf("bench-wsroute-%d:", time.Now().UnixNano())
	config := wsroute.Config{Prefix: prefix, SendQueueSize: sendQueue}
	if history {
		config.History = wsroute.HistoryConfig{Clients: true, Size: 1000}
	}
	for _, name := range []string{"a", "b"} {
		config.Client, config.NodeID = e.client(false), name
		node, err := wsroute.NewNode(config, nil)
		if err != nil {
			w.close()
			return nil, err
		}
		w.nodes = append(w.nodes, node)
	}
	handler, err := w.nodes[1].Handler(wsroute.HandlerConfig{
		Authenticate: func(*http.Request) (string, error) { return "bob", nil },
	})
	if err != nil {
		w.close()
		return nil, err
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.close()
		return nil, err
	}
	w.server = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = w.server.Serve(listener) }()
	w.url = "ws://" + listener.Addr().String()
	return w, nil
}

func (w *wsrouteBench) close() {
	if w.server != nil {
		_ = w.server.Close()
	}
	for _, n := range w.nodes {
		_ = n.Close()
	}
}

// dial connects bob, framed or not, presenting recover (JSON) if set.
func (w *wsrouteBench) dial(ctx context.Context, framed bool, recover string) (*websocket.Conn, error) {
	var opts *websocket.DialOptions
	u := w.url
	if framed {
		opts = &websocket.DialOptions{Subprotocols: []string{wsroute.Subprotocol}}
		if recover != "" {
			u += "?recover=" + url.QueryEscape(recover)
		}
	}
	ws, _, err := websocket.Dial(ctx, u, opts)
	if err == nil {
		ws.SetReadLimit(1 << 20)
	}
	return ws, err
}

// frame is what the benchmark reads of a wsroute.v1 frame.
type frame struct {
	Type       string `json:"type"`
	Epoch      string `json:"epoch"`
	Offset     uint64 `json:"offset"`
	Recovered  *bool  `json:"recovered"`
	Data       string `json:"data"`
	DataBase64 []byte `json:"data_base64"`
}

// payloadOf returns a frame's payload: the frame itself on a plain
// connection, its data (nil for a position frame) on a framed one.
func payloadOf(data []byte, framed bool) ([]byte, error) {
	if !framed {
		return data, nil
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Type != "message" {
		return nil, nil
	}
	if f.DataBase64 != nil {
		return f.DataBase64, nil
	}
	return []byte(f.Data), nil
}

// awaitBob sends probes until bob is registered on node b.
func (w *wsrouteBench) awaitBob(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		result, err := w.nodes[0].SendToClient(ctx, "bob", []byte("probe"), wsroute.WithoutHistory())
		if err != nil {
			return err
		}
		if result.Status == wsroute.Delivered {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("bob never registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wsrouteLatency measures SendToClient on one node to a WebSocket client of
// another: Lua lookup and PUBLISH, the other node's subscription, its send
// queue and writer, a real WebSocket; with history, keeping each message
// in bob's history too, and a wsroute.v1 client reading envelopes.
func wsrouteLatency(ctx context.Context, e *env, perSecond int, duration time.Duration, size int, history bool) (sample, error) {
	contender := cWSRoute
	if history {
		contender = cWSRouteHistory
	}
	s := sample{contender: contender, family: "wsroute", workload: fmt.Sprintf("latency at %d msg/s", perSecond), size: size}
	n := int(float64(perSecond) * duration.Seconds())
	w, err := startWSRoute(e, history, n)
	if err != nil {
		return s, err
	}
	defer w.close()
	ws, err := w.dial(ctx, history, "")
	if err != nil {
		return s, err
	}
	defer ws.CloseNow()

	t := newTracker(n)
	log := &latencyLog{}
	go func() {
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			p, err := payloadOf(data, history)
			if err == nil && len(p) >= 16 {
				log.add(time.Since(sentAt(p)))
				t.record(p)
			}
		}
	}()
	if err := w.awaitBob(ctx); err != nil {
		return s, err
	}
	err = measure(ctx, e, &s, n, func() error {
		err := openLoop(ctx, perSecond, n, func(i int) error {
			p := payload(i, size)
			stamp(p)
			result, err := w.nodes[0].SendToClient(ctx, "bob", p)
			if err == nil && result.Status != wsroute.Delivered {
				err = fmt.Errorf("message %d: %s", i, result.Status)
			}
			return err
		})
		if err == nil {
			err = t.wait(ctx, workloadTimeout)
		}
		return err
	})
	t.tally(&s)
	if err != nil {
		return s, fmt.Errorf("%w (node b: %+v)", err, w.nodes[1].Stats())
	}
	s.p50, s.p99, s.p999, err = log.percentiles()
	return s, err
}

// replayedMessages is how many messages bob misses before each reconnect
// of wsrouteReplay, and replayRounds how many reconnects it times.
const (
	replayedMessages = 1000
	replayRounds     = 20
)

// wsrouteReplay measures recovery: bob, 1,000 messages behind, reconnects
// over a real WebSocket presenting his position; the time runs from the
// dial to the position frame that ends the replay, every message read and
// checked. p50 and p99 of replayRounds reconnects.
func wsrouteReplay(ctx context.Context, e *env) (sample, error) {
	s := sample{contender: cWSRouteHistory, family: "wsroute", workload: wReplay, size: 64}
	w, err := startWSRoute(e, true, 0)
	if err != nil {
		return s, err
	}
	defer w.close()
	first, err := w.nodes[0].SendToClient(ctx, "bob", []byte("first"))
	if err != nil {
		return s, err
	}
	for i := range replayedMessages {
		if _, err := w.nodes[0].SendToClient(ctx, "bob", payload(i, 64)); err != nil {
			return s, err
		}
	}
	from, err := json.Marshal(map[string]wsroute.Position{"client": {Epoch: first.Epoch, Offset: first.Offset}})
	if err != nil {
		return s, err
	}
	log := &latencyLog{}
	for range replayRounds {
		start := time.Now()
		if err := w.replayOnce(ctx, string(from), first.Offset); err != nil {
			return s, err
		}
		log.add(time.Since(start))
	}
	s.p50, s.p99, s.p999, err = log.percentiles()
	return s, err
}

func (w *wsrouteBench) replayOnce(ctx context.Context, from string, after uint64) error {
	ws, err := w.dial(ctx, true, from)
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	next := after + 1
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			return err
		}
		if f.Type == "ping" {
			continue
		}
		if f.Type == "position" {
			if f.Recovered == nil || !*f.Recovered || next != after+replayedMessages+1 {
				return fmt.Errorf("recovery ended after offset %d, recovered %v", next-1, f.Recovered)
			}
			return ws.Close(websocket.StatusNormalClosure, "")
		}
		if f.Offset != next {
			return fmt.Errorf("offset %d, want %d", f.Offset, next)
		}
		next++
	}
}
