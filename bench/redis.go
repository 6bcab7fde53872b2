package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// redisCost is what Redis did for a run: commands by name and CPU time,
// read from INFO before and after.
type redisCost struct {
	calls map[string]int64
	cpu   float64 // seconds, user + system
}

func readCost(ctx context.Context, client *redis.Client) (redisCost, error) {
	info, err := client.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return redisCost{}, err
	}
	cost := redisCost{calls: map[string]int64{}}
	for _, line := range strings.Split(info, "\r\n") {
		// cmdstat_xadd:calls=123,usec=...
		if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok {
			name, fields, _ := strings.Cut(rest, ":")
			for _, field := range strings.Split(fields, ",") {
				if v, ok := strings.CutPrefix(field, "calls="); ok {
					cost.calls[name], _ = strconv.ParseInt(v, 10, 64)
				}
			}
		}
		for _, key := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, key); ok {
				f, _ := strconv.ParseFloat(v, 64)
				cost.cpu += f
			}
		}
	}
	return cost, nil
}

// since returns the commands and CPU spent between before and c.
func (c redisCost) since(before redisCost) redisCost {
	d := redisCost{calls: map[string]int64{}, cpu: c.cpu - before.cpu}
	for name, n := range c.calls {
		if n -= before.calls[name]; n > 0 {
			d.calls[name] = n
		}
	}
	return d
}

func (c redisCost) total() int64 {
	var n int64
	for _, v := range c.calls {
		n += v
	}
	return n
}

// top lists the busiest commands, e.g. "xadd 1.00, xreadgroup 0.01".
func (c redisCost) top(perMessage float64) string {
	type kv struct {
		name string
		n    int64
	}
	var list []kv
	for name, n := range c.calls {
		if name == "info" || name == "ping" || name == "hello" || strings.HasPrefix(name, "client") {
			continue
		}
		list = append(list, kv{name, n})
	}
	for i := range list {
		for j := i + 1; j < len(list); j++ {
			if list[j].n > list[i].n {
				list[i], list[j] = list[j], list[i]
			}
		}
	}
	var parts []string
	for i, e := range list {
		if i == 3 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", e.name, float64(e.n)/perMessage))
	}
	return strings.Join(parts, ", ")
}

// roundTrips counts a client's round trips to Redis: a single command or a
// pipeline is one.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}
