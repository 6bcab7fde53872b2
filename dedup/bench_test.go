package dedup_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// BenchmarkDedup measures what deduplication costs per message, one
// goroutine at a time on a private Redis, so that ns/op is mostly round
// trips on loopback: the round trips each operation makes (counted by a
// go-redis hook), Redis' time in the commands sent (INFO commandstats;
// scripts and transactions with what they run), and the memory a mark
// takes. The operations: "check" is
// Repository.IsDuplicate of a new key (SET NX GET PX); "middleware" a
// message through the Middleware to a handler that does nothing, acked
// (the claim, then the mark once acked, which overlaps the next message
// as in a Router); "commit" the same with the handler's HINCRBY committed
// with the mark; "publish" StreamsPublisher.Publish of a 64 B message
// without a guard, through the Publisher (PublishOnce), and through the
// Publisher over a publisher it does not know (claims and marks around
// the XADD).
//
//	GOWORK=off go test -run '^$' -bench Dedup -benchtime 20000x ./dedup
func BenchmarkDedup(b *testing.B) {
	server := pubsubtest.StartServer(b, pubsubtest.ServerOptions{})
	admin := server.Client(b)
	ctx := context.Background()
	counter := &roundTrips{}
	client := server.Client(b)
	client.AddHook(counter)
	config := dedup.Config{Client: client} // the default Prefix
	// bytesOf reports the memory of a mark, from the key and value in
	// Redis' accounting.
	bytesOf := func(b *testing.B, key string) {
		bytes, err := admin.MemoryUsage(ctx, key).Result()
		mustBench(b, err)
		b.ReportMetric(float64(bytes), "bytes/mark")
	}
	payload := []byte(strings.Repeat("x", 64))

	// measure times b.N ops and then settle, which waits for what the
	// ops left to finish on other goroutines.
	measure := func(b *testing.B, commands []string, op func(i int), settle func()) {
		mustBench(b, admin.FlushAll(ctx).Err())
		mustBench(b, admin.ConfigResetStat(ctx).Err())
		counter.n.Store(0)
		b.ResetTimer()
		for i := range b.N {
			op(i)
		}
		settle()
		b.StopTimer()
		b.ReportMetric(float64(counter.n.Load())/float64(b.N), "round-trips/op")
		b.ReportMetric(redisMicros(b, admin, commands)/float64(b.N), "redis-µs/op")
	}
	nothing := func() {}

	b.Run("check", func(b *testing.B) {
		repo, err := dedup.NewRepository(config)
		mustBench(b, err)
		var last string
		measure(b, []string{"set"}, func(int) {
			last = newMessage("").UUID
			duplicate, err := repo.IsDuplicate(ctx, last)
			mustBench(b, err)
			if duplicate {
				b.Fatal("a new key is a duplicate")
			}
		}, nothing)
		bytesOf(b, "redisbus:dedup:"+last)
	})

	for _, commit := range []bool{false, true} {
		b.Run(map[bool]string{false: "middleware", true: "commit"}[commit], func(b *testing.B) {
			m, err := dedup.NewMiddleware(config, nil)
			mustBench(b, err)
			h := m.Middleware(func(msg *message.Message) ([]*message.Message, error) {
				if !commit {
					return nil, nil
				}
				return nil, m.Commit(ctx, msg, func(pipe redis.Pipeliner) error {
					pipe.HIncrBy(ctx, "bench:{counts}", "orders", 1)
					return nil
				})
			})
			commands := []string{"set"} // the claim, and the mark
			if commit {
				// The inner SET counts twice, in EXEC and in SET: a
				// microsecond too many.
				commands = []string{"set", "watch", "get", "multi", "exec"}
			}
			var last *message.Message
			measure(b, commands, func(int) {
				last = newMessage("order")
				if _, err := h(last); err != nil {
					b.Fatal(err)
				}
				last.Ack() // the mark follows on another goroutine, as in a Router
			}, func() {
				for stats := m.Stats(); stats.Marked+stats.Committed < stats.Handled; stats = m.Stats() {
					time.Sleep(time.Millisecond)
				}
			})
			name, _ := dedup.HandlerAndUUID(last)
			bytesOf(b, "redisbus:dedup:"+name)
		})
	}

	b.Run("publish", func(b *testing.B) {
		streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
		mustBench(b, err)
		b.Cleanup(func() { _ = streams.Close() })
		once, err := dedup.NewPublisher(streams, config, nil)
		mustBench(b, err)
		hidden, err := dedup.NewPublisher(hiddenPublisher{streams}, config, nil)
		mustBench(b, err)
		for _, pub := range []struct {
			name     string
			commands []string
			message.Publisher
		}{
			{"StreamsPublisher", []string{"xadd"}, streams},
			{"Publisher", []string{"evalsha"}, once},
			{"Publisher over any", []string{"set", "xadd"}, hidden},
		} {
			b.Run(pub.name, func(b *testing.B) {
				var last string
				measure(b, pub.commands, func(int) {
					last = newMessage("").UUID
					mustBench(b, pub.Publish("bench:orders", message.NewMessage(last, payload)))
				}, nothing)
				if pub.Publisher == once {
					bytesOf(b, "{bench:orders}:redisbus:dedup:"+last)
				}
			})
		}
	})
}

// roundTrips is a go-redis hook counting round trips: a command, or a
// pipeline, sent.
type roundTrips struct{ n atomic.Int64 }

func (c *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// redisMicros is the time Redis spent in the named commands since the
// last CONFIG RESETSTAT, in microseconds. Name only the commands the
// client sends: Redis also counts the commands a script or a transaction
// runs under their own names, inside the script's or EXEC's time.
func redisMicros(b *testing.B, admin *redis.Client, commands []string) float64 {
	stats := pubsubtest.CommandStats(b, admin)
	total := 0.0
	for _, name := range commands {
		total += stats[name].Usec
	}
	return total
}

func mustBench(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
