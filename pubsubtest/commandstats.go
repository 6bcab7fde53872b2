package pubsubtest

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// CommandStat is what Redis counted for one command since its last CONFIG
// RESETSTAT (INFO commandstats).
type CommandStat struct {
	Calls int64
	Usec  float64 // time spent in it, in microseconds
}

// CommandStats reads INFO commandstats, by lower-case command name
// ("evalsha", "set", "client|list"). Redis counts the commands a script or
// a transaction runs under their own names too, inside the script's or
// EXEC's time.
func CommandStats(t testing.TB, client *redis.Client) map[string]CommandStat {
	t.Helper()
	info, err := client.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("pubsubtest: INFO commandstats: %v", err)
	}
	stats := map[string]CommandStat{}
	for _, line := range strings.Split(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "cmdstat_")), ":")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		var s CommandStat
		for _, field := range strings.Split(fields, ",") {
			key, value, _ := strings.Cut(field, "=")
			switch key {
			case "calls":
				s.Calls, _ = strconv.ParseInt(value, 10, 64)
			case "usec":
				s.Usec, _ = strconv.ParseFloat(value, 64)
			}
		}
		stats[name] = s
	}
	return stats
}
