package dedup_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/dedup"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// The ACL rules docs/dedup.md documents, word for word
// (TestACLRulesAreDocumented checks the page).
var (
	// aclDedup is what a Repository, a Middleware and a Publisher over any
	// publisher need, with Prefix "app:dedup:".
	aclDedup = []string{"-@all", "+set", "+get", "+del", "+pexpire", "+eval", "+evalsha", "resetkeys", "~app:dedup:*"}
	// aclCommit is what Commit adds, besides what its commands need.
	aclCommit = []string{"+watch", "+multi", "+exec"}
	// aclStreamsPublishOnce is a StreamsPublisher's rules with what
	// PublishOnce adds: its marks beside the streams, and loading its
	// script.
	aclStreamsPublishOnce = []string{"-@all", "+xadd", "+eval", "+evalsha", "+xinfo|groups", "+xpending", "+xrange",
		"+xtrim", "+xlen", "+get", "+set", "+script|load", "resetkeys", "~app:*", "~{app:*"}
)

func TestACLRulesAreDocumented(t *testing.T) {
	page, err := os.ReadFile("../docs/dedup.md")
	require.NoError(t, err)
	for _, rules := range [][]string{aclDedup, aclCommit, aclStreamsPublishOnce} {
		documented := strings.ReplaceAll(strings.Join(rules, " "), "|", `\|`) // escaped in a Markdown table
		assert.Contains(t, string(page), "`"+documented+"`", "docs/dedup.md should show these rules")
	}
}

// aclClient creates an ACL user with exactly rules on server and returns a
// client logged in as it.
func aclClient(t *testing.T, server *pubsubtest.Server, admin *redis.Client, user string, rules []string) *redis.Client {
	t.Helper()
	pubsubtest.SetACLUser(t, admin, user, "pw", rules)
	client := redis.NewClient(&redis.Options{Addr: server.Addr, Username: user, Password: "pw"})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// Every component runs as an ACL user with exactly the documented rules,
// through each of its paths: marks, duplicates, claims renewed, released
// and marked, a Commit, a check that failed and undid its mark, a
// PublishOnce after Redis forgot its script. Redis' ACL LOG stays empty.
func TestComponentsWithTheDocumentedACL(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t)
	ctx := t.Context()
	config := dedup.Config{Prefix: "app:dedup:", Lease: 30 * time.Millisecond}

	// Repository: a check, a duplicate, and a check that fails.
	config.Client = aclClient(t, server, admin, "repository", aclDedup)
	repo := newRepository(t, config)
	for range 2 {
		_, err := repo.IsDuplicate(ctx, "k")
		require.NoError(t, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := repo.IsDuplicate(cancelled, "undone")
	require.Error(t, err)
	assert.Equal(t, dedup.RepositoryStats{Checks: 3, Duplicates: 1, Errors: 1}, repo.Stats())

	// Middleware: a handler that outlasts its lease (renewals), one that
	// fails (release), a duplicate, and a Commit.
	config.Client = aclClient(t, server, admin, "middleware",
		append(append(append([]string{}, aclDedup...), aclCommit...), "+hincrby", "~app:counts"))
	m := newMiddleware(t, config)
	slow := newMessage("slow")
	_, err = m.Middleware(func(*message.Message) ([]*message.Message, error) {
		time.Sleep(3 * config.Lease)
		return nil, nil
	})(slow)
	require.NoError(t, err)
	slow.Ack()
	awaitMark(t, config, slow)
	failing := newMessage("fails")
	_, err = m.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, errors.New("fails") })(failing)
	require.Error(t, err)
	_, err = m.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })(slow.Copy())
	require.NoError(t, err)
	committed := newMessage("committed")
	_, err = m.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		return nil, m.Commit(ctx, msg, func(pipe redis.Pipeliner) error {
			pipe.HIncrBy(ctx, "app:counts", "orders", 1)
			return nil
		})
	})(committed)
	require.NoError(t, err)
	committed.Ack()
	want := dedup.MiddlewareStats{Handled: 3, Marked: 1, Committed: 1, Duplicates: 1, Released: 1}
	eventually(t, "every claim is marked or released", func() bool { return m.Stats() == want })

	// Publisher over any publisher: a Publish, a duplicate, one that fails,
	// one slower than the lease.
	config.Client = aclClient(t, server, admin, "publisher", aclDedup)
	inner := newStoringPublisher()
	pub := newGuard(t, inner, config)
	msg := newMessage("order")
	require.NoError(t, pub.Publish("app:orders", msg))
	require.NoError(t, pub.Publish("app:orders", msg.Copy()))
	inner.next = &outcome{err: errors.New("broker unavailable")}
	require.Error(t, pub.Publish("app:orders", newMessage("fails")))
	inner.delay = 3 * config.Lease
	require.NoError(t, pub.Publish("app:orders", newMessage("slow")))
	assert.Equal(t, dedup.PublisherStats{Published: 2, Duplicates: 1}, pub.Stats())

	// Publisher over a StreamsPublisher, also after Redis lost its scripts.
	streamsClient := aclClient(t, server, admin, "streams", aclStreamsPublishOnce)
	streams, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: streamsClient}, nil)
	require.NoError(t, err)
	config.Client = streamsClient
	once := newGuard(t, streams, config)
	defer once.Close()
	for range 2 {
		require.NoError(t, admin.ScriptFlush(ctx).Err())
		require.NoError(t, once.Publish("app:orders", msg.Copy(), newMessage("another")))
	}
	assert.Equal(t, dedup.PublisherStats{Published: 3, Duplicates: 1}, once.Stats())

	assert.Empty(t, pubsubtest.ACLRefusals(t, admin), "Redis refused commands: the documented ACL rules are not enough")
}
