package wsroute_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// BenchmarkHistory measures what recovery costs, on a private Redis:
//
//   - route: SendToClient to a client connected to another node, 64 B,
//     with and without history (Size 1,000): Redis' time per route.lua
//     (INFO commandstats, every command the script runs included) and the
//     whole call (ns/op); with history, the memory a kept message takes.
//
//   - replay: a framed client 1,000 messages behind reconnects over a real
//     WebSocket: from the dial to the position frame that ends the
//     replay, every message read and parsed (ns/op).
//
//     GOWORK=off go test -run '^$' -bench History -benchtime 2000x ./wsroute
func BenchmarkHistory(b *testing.B) {
	for _, keep := range []bool{false, true} {
		b.Run(fmt.Sprintf("route/history=%v", keep), func(b *testing.B) {
			admin, sender, _ := historyBenchNodes(b, wsroute.HistoryConfig{Clients: keep})
			ctx := context.Background()
			payload := []byte(strings.Repeat("x", 64))
			mustBench(b, admin.ConfigResetStat(ctx).Err())
			for b.Loop() {
				result, err := sender.SendToClient(ctx, "bob", payload)
				mustBench(b, err)
				if result.Status != wsroute.Delivered {
					b.Fatalf("route: %s", result.Status)
				}
			}
			b.ReportMetric(scriptMicros(b, admin), "redis-µs/route")
			if keep {
				bytes, err := admin.MemoryUsage(ctx, "p:history:client:bob", 0).Result()
				mustBench(b, err)
				length, err := admin.XLen(ctx, "p:history:client:bob").Result()
				mustBench(b, err)
				b.ReportMetric(float64(bytes)/float64(length), "bytes/kept")
			}
		})
	}
	b.Run("replay/1000", func(b *testing.B) {
		_, sender, receiver := historyBenchNodes(b, wsroute.HistoryConfig{Clients: true, Size: 2000})
		ctx := context.Background()
		handler, err := receiver.Handler(wsroute.HandlerConfig{Authenticate: func(*http.Request) (string, error) { return "carol", nil }})
		mustBench(b, err)
		server := httptest.NewServer(handler)
		b.Cleanup(server.Close)
		wsURL := "ws" + strings.TrimPrefix(server.URL, "http")

		// carol's position, then 1,000 messages she misses.
		first, err := sender.SendToClient(ctx, "carol", []byte("first"))
		mustBench(b, err)
		payload := []byte(strings.Repeat("x", 64))
		for range 1000 {
			_, err := sender.SendToClient(ctx, "carol", payload)
			mustBench(b, err)
		}
		from, err := json.Marshal(map[string]wsroute.Position{"client": {Epoch: first.Epoch, Offset: first.Offset}})
		mustBench(b, err)
		dialURL := wsURL + "?recover=" + url.QueryEscape(string(from))
		for b.Loop() {
			ws, _, err := websocket.Dial(ctx, dialURL, &websocket.DialOptions{Subprotocols: []string{wsroute.Subprotocol}})
			mustBench(b, err)
			ws.SetReadLimit(1 << 20)
			replayed := 0
			for {
				_, data, err := ws.Read(ctx)
				mustBench(b, err)
				var f struct {
					Type      string `json:"type"`
					Recovered bool   `json:"recovered"`
				}
				mustBench(b, json.Unmarshal(data, &f))
				if f.Type == "ping" {
					continue
				}
				if f.Type == "position" {
					if !f.Recovered || replayed != 1000 {
						b.Fatalf("replayed %d, recovered %v", replayed, f.Recovered)
					}
					break
				}
				replayed++
			}
			_ = ws.Close(websocket.StatusNormalClosure, "")
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/replay")
	})
}

// historyBenchNodes starts a private Redis and two nodes on it, bob
// connected to the receiver (a framed connection that takes everything).
func historyBenchNodes(b *testing.B, history wsroute.HistoryConfig) (admin *redis.Client, sender, receiver *wsroute.Node) {
	b.Helper()
	server := pubsubtest.StartServer(b, pubsubtest.ServerOptions{})
	admin = server.Client(b)
	config := wsroute.Config{Client: admin, Prefix: "p:", NodeTTL: time.Hour, History: history}
	config.NodeID = "sender"
	sender, err := wsroute.NewNode(config, nil)
	mustBench(b, err)
	config.NodeID = "receiver"
	receiver, err = wsroute.NewNode(config, nil)
	mustBench(b, err)
	conn := newIdleConn()
	var serving sync.WaitGroup
	serving.Go(func() {
		_ = receiver.ServeWith(context.Background(), conn, "bob", wsroute.ServeOptions{Framed: true})
	})
	b.Cleanup(func() {
		_ = conn.Close(0, "")
		serving.Wait()
		_ = sender.Close()
		_ = receiver.Close()
	})
	for {
		result, err := sender.SendToClient(context.Background(), "bob", []byte("probe"), wsroute.WithoutHistory())
		mustBench(b, err)
		if result.Status == wsroute.Delivered {
			return admin, sender, receiver
		}
		time.Sleep(time.Millisecond) // Serve has nothing to wait on
	}
}

// scriptMicros is the mean time of EVALSHA and EVAL calls since the last
// CONFIG RESETSTAT, in µs.
func scriptMicros(b *testing.B, admin *redis.Client) float64 {
	b.Helper()
	stats := pubsubtest.CommandStats(b, admin)
	evalsha, eval := stats["evalsha"], stats["eval"]
	if evalsha.Calls+eval.Calls == 0 {
		b.Fatal("no script ran")
	}
	return (evalsha.Usec + eval.Usec) / float64(evalsha.Calls+eval.Calls)
}

func mustBench(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
