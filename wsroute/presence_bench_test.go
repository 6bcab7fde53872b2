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
// Redis' own time per join, per leave, per Presence query (ns/op is the
// query's round trip on top of it), and for the one query that finds all n
// on a dead node and records their leaves. The times come from SLOWLOG on a
// private Redis, which logs every command with its duration.
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
			join, leave := scriptTimes(b, admin, 6), scriptTimes(b, admin, 5)

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
			query := scriptTimes(b, admin, 3)

			// The members' node dies: without its client it can remove
			// nothing, and its liveness key goes as when it expires.
			require(membersClient.Close())
			require(admin.Del(ctx, "p:node:members").Err())
			require(admin.SlowLogReset(ctx).Err())
			got, err = asker.Presence(ctx, "room")
			require(err)
			reap := scriptTimes(b, admin, 3)
			if len(got) != 0 {
				b.Fatalf("%d members after their node died", len(got))
			}
			events, err := admin.XLen(ctx, asker.PresenceTopic()).Result()
			require(err)
			b.ReportMetric(median(join), "redis-µs/join")
			b.ReportMetric(median(leave), "redis-µs/leave")
			b.ReportMetric(median(query), "redis-µs/query")
			b.ReportMetric(reap[0], "redis-µs/reap-all")
			b.Logf("%d members: %d joins, %d leaves, %d queries logged; %d events on the stream", n, len(join), len(leave), len(query), events)
		})
	}
}

// scriptTimes returns the durations, in µs, of the presence scripts with
// keys keys (6 a join, 5 a leave, 3 a query) in the slow log.
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

func median(times []float64) float64 {
	s := slices.Clone(times)
	slices.Sort(s)
	return s[len(s)/2]
}
