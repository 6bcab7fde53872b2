package redisbus

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// Lua scripts live in lua/ so they can be read, and tested with redis-cli,
// on their own. The scripts that act for a consumer start with lease.lua,
// which defines the lease check they share.
var (
	//go:embed lua/lease.lua
	leaseSource string

	//go:embed lua/touch.lua
	touchSource string
	touchScript = newConsumerScript(touchSource)

	//go:embed lua/take.lua
	takeSource string
	takeScript = newConsumerScript(takeSource)

	//go:embed lua/release.lua
	releaseSource string
	releaseScript = newConsumerScript(releaseSource)

	//go:embed lua/delete_idle_consumers.lua
	deleteIdleConsumersSource string
	deleteIdleConsumersScript = redis.NewScript(deleteIdleConsumersSource)

	//go:embed lua/trim.lua
	trimSource string

	//go:embed lua/delayed_schedule.lua
	delayedScheduleSource string

	//go:embed lua/delayed_move.lua
	delayedMoveSource string
	delayedMoveScript = redis.NewScript(delayedMoveSource)

	//go:embed lua/xadd_once.lua
	xaddOnceSource string
	xaddOnceScript = redis.NewScript(xaddOnceSource)

	// setLeaseScript is SET NX PX for a lease when Redis is out of memory.
	setLeaseScript = redis.NewScript(allowOOM + "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])")
)

// allowOOM lets a script write when Redis is out of memory (Redis 7.0+).
// A consumer's scripts write one small key, its lease, only when the lease
// lapsed; reading and acking go on when Redis is full, and so must they.
const allowOOM = "#!lua flags=allow-oom\n"

// consumerScript is a script that acts for a consumer of a group (see
// lua/lease.lua), in two variants: one for any Redis, and one that Redis
// 7.0 and later run when they are out of memory, tried after the first
// met OOM. Both start with the lease check, before any write, so running
// the second after the first failed repeats nothing.
type consumerScript struct {
	plain, whenFull *redis.Script
}

func newConsumerScript(source string) consumerScript {
	return consumerScript{
		plain:    redis.NewScript(leaseSource + source),
		whenFull: redis.NewScript(allowOOM + leaseSource + source),
	}
}

func (s consumerScript) Run(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd {
	cmd := s.plain.Run(ctx, c, keys, args...)
	if isRedisError(cmd.Err(), "OOM") {
		return s.whenFull.Run(ctx, c, keys, args...)
	}
	return cmd
}
