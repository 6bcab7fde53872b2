package pubsubtest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// SetACLUser makes name an ACL user with password and exactly rules
// (after "reset"), through admin.
func SetACLUser(t testing.TB, admin redis.UniversalClient, name, password string, rules []string) {
	t.Helper()
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">" + password}
	for _, rule := range rules {
		args = append(args, rule)
	}
	if err := admin.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("pubsubtest: ACL SETUSER %s: %v", name, err)
	}
}

// ACLRefusals returns what Redis' ACL LOG lists: every command it refused
// for want of a permission. Empty, it proves the rules were enough.
func ACLRefusals(t testing.TB, admin redis.UniversalClient) []any {
	t.Helper()
	log, err := admin.Do(context.Background(), "ACL", "LOG").Slice()
	if err != nil {
		t.Fatalf("pubsubtest: ACL LOG: %v", err)
	}
	return log
}
