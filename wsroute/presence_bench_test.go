package wsroute_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// idleConn is a connection that sends nothing and takes everything, for
// members that need no socket.
type idleConn struct {
	once   sync.Once
	closed chan struct{}
}

func newIdleConn() *idleConn { return &idleConn{closed: make(chan struct{})} }

func (c *idleConn) Read(ctx context.Context) ([]byte, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, fmt.Errorf("closed")
	}
}

func (c *idleConn) Write(context.Context, []byte) error { return nil }

func (c *idleConn) Close(wsroute.StatusCode, string) error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// BenchmarkPresence measures what presence costs Redis in a room of n
// members, each with one connection and 32 bytes of info, events on:
// Redis' own time per join, per leave, per Presence query (all its
// commands; ns/op is the whole call, round trips included), and per batch
// of a dead node's entries removed with their leaves recorded (by the
// queries that find them). The times come from SLOWLOG on a private Redis,
// which logs every command with its duration.
//
//	GOWORK=off go test -run '^$' -bench Presence -benchtime 200x ./wsroute
func BenchmarkPresence(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			server := pubsubtest.StartServer(b, pubsubtest.ServerOptions{})
			admin := server.Client(b)
			ctx := context.Background()
			require := func(err error) {
				if err != nil {
					b.Fatal(err)
				}
			}
			// NodeTTL of an hour: no renewal or sweep runs meanwhile.
			config := wsroute.Config{Prefix: "p:", NodeTTL: time.Hour, PresenceEvents: true}
			membersClient := redis.NewClient(admin.Options())
			config.Client = membersClient
			config.NodeID = "members"
			members, err := wsroute.NewNode(config, nil)
			require(err)
			config.Client = admin
			config.NodeID = "asker"
			asker, err := wsroute.NewNode(config, nil)
			require(err)
			b.Cleanup(func() { _ = asker.Close(); _ = members.Close() })

			var serving sync.WaitGroup
			conns := make([]*idleConn, n)
			for i := range conns {
				conns[i] = newIdleConn()
				serving.Go(func() { _ = members.Serve(ctx, conns[i], fmt.Sprintf("client-%05d", i)) })
			}
			b.Cleanup(func() {
				for _, c := range conns {
					_ = c.Close(0, "")
				}
				serving.Wait()
			})
			for members.Stats().Connections < n {
				time.Sleep(time.Millisecond) // Serve has nothing to wait on
			}
			require(admin.ConfigSet(ctx, "slowlog-log-slower-than", "0").Err())
			require(admin.ConfigSet(ctx, "slowlog-max-len", "100000").Err())
			require(admin.SlowLogReset(ctx).Err())
			info := []byte(strings.Repeat("i", 32))
			for i := range n {
				require(members.JoinWithInfo(ctx, fmt.Sprintf("client-%05d", i), "room", info))
			}
			leaves := min(n, 100)
			for i := range leaves {
				require(members.Leave(ctx, fmt.Sprintf("client-%05d", i), "room"))
			}
			for i := range leaves {
				require(members.JoinWithInfo(ctx, fmt.Sprintf("client-%05d", i), "room", info))
			}
			join, leave := scriptTimes(b, admin, 7), scriptTimes(b, admin, 3)

			got, err := asker.Presence(ctx, "room")
			require(err)
			if len(got) != n {
				b.Fatalf("%d members, want %d", len(got), n)
			}
			require(admin.SlowLogReset(ctx).Err())
			for b.Loop() {
				_, err := asker.Presence(ctx, "room")
				require(err)
			}
			query := totalTime(b, admin) / float64(b.N)

			// The members' node dies: without its client it can remove
			// nothing, and its liveness key goes as when it expires. Each
			// query then removes a batch of its entries.
			require(membersClient.Close())
			require(admin.Del(ctx, "p:node:members").Err())
			require(admin.SlowLogReset(ctx).Err())
			queries := 0
			for {
				got, err = asker.Presence(ctx, "room")
				require(err)
				if len(got) != 0 {
					b.Fatalf("%d members after their node died", len(got))
				}
				if queries++; queries > 10*n {
					b.Fatal("the dead node's entries are not going")
				}
				left, err := admin.HLen(ctx, "p:presence:room").Result()
				require(err)
				if left == 0 {
					break
				}
			}
			reap := scriptTimes(b, admin, 2)
			events, err := admin.XLen(ctx, asker.PresenceTopic()).Result()
			require(err)
			streamBytes, err := admin.MemoryUsage(ctx, asker.PresenceTopic()).Result()
			require(err)
			b.ReportMetric(median(join), "redis-µs/join")
			b.ReportMetric(median(leave), "redis-µs/leave")
			b.ReportMetric(query, "redis-µs/query")
			b.ReportMetric(slices.Max(reap), "redis-µs/reap-batch")
			b.Logf("%d members: %d joins, %d leaves; queries %.0f µs of Redis each; after the node died, %d queries removed its entries in %d batches of at most %.0f µs (%.0f µs in all); %d events on the stream, %d bytes",
				n, len(join), len(leave), query, queries, len(reap), slices.Max(reap), sum(reap), events, streamBytes)
		})
	}
}

// scriptTimes returns the durations, in µs, of the presence scripts with
// keys keys (7 a join, 3 a leave, 2 a query's first step, which removes a
// batch of a dead node's entries) in the slow log.
func scriptTimes(b *testing.B, admin *redis.Client, keys int) []float64 {
	b.Helper()
	entries, err := admin.SlowLogGet(context.Background(), -1).Result()
	if err != nil {
		b.Fatal(err)
	}
	var times []float64
	for _, e := range entries {
		if len(e.Args) > 3 && strings.HasPrefix(e.Args[0], "eval") && e.Args[2] == fmt.Sprint(keys) && strings.HasPrefix(e.Args[3], "p:presence:") {
			times = append(times, float64(e.Duration.Microseconds()))
		}
	}
	if len(times) == 0 {
		b.Fatalf("no script with %d keys in the slow log", keys)
	}
	return times
}

// totalTime returns the time, in µs, of every command in the slow log.
func totalTime(b *testing.B, admin *redis.Client) float64 {
	b.Helper()
	entries, err := admin.SlowLogGet(context.Background(), -1).Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, e := range entries {
		if !strings.EqualFold(e.Args[0], "slowlog") {
			total += float64(e.Duration.Microseconds())
		}
	}
	return total
}

func sum(times []float64) float64 {
	var s float64
	for _, t := range times {
		s += t
	}
	return s
}

func median(times []float64) float64 {
	s := slices.Clone(times)
	slices.Sort(s)
	return s[len(s)/2]
}
