package redisbus

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// Lua scripts live in lua/ so they can be read, and tested with redis-cli,
// on their own.
var (
	//go:embed lua/touch.lua
	touchSource string
	touchScript = redis.NewScript(touchSource)

	//go:embed lua/delete_idle_consumers.lua
	deleteIdleConsumersSource string
	deleteIdleConsumersScript = redis.NewScript(deleteIdleConsumersSource)
)
