package dedup

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// Lua scripts live in lua/ so they can be read, and tried with redis-cli,
// on their own. Each touches one key, so it runs on Redis Cluster as it
// does on one server.
var (
	//go:embed lua/release.lua
	releaseSource string
	releaseScript = redis.NewScript(releaseSource)

	//go:embed lua/renew.lua
	renewSource string
	renewScript = redis.NewScript(renewSource)
)
