package redisbus_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// The ACL rules docs/operating-redis.md documents for each component, word
// for word (TestACLRulesAreDocumented checks the page).
var (
	aclPubSubPublisher   = []string{"-@all", "+publish", "resetchannels", "&app:*"}
	aclPubSubSubscriber  = []string{"-@all", "+subscribe", "+unsubscribe", "+ping", "resetchannels", "&app:*"}
	aclShardedPublisher  = []string{"-@all", "+spublish", "resetchannels", "&app:*"}
	aclShardedSubscriber = []string{"-@all", "+ssubscribe", "+sunsubscribe", "+ping", "resetchannels", "&app:*"}
	aclStreamsPublisher  = []string{"-@all", "+xadd", "+eval", "+evalsha", "+xinfo|groups", "+xpending", "+xrange",
		"+xtrim", "+xlen", "+zadd", "+zrange", "+publish", "+spublish",
		"resetkeys", "~app:*", "~{app:*", "resetchannels", "&{app:*"}
	aclStreamsSubscriber = []string{"-@all", "+xgroup|create", "+xgroup|delconsumer", "+xinfo|groups", "+xinfo|consumers",
		"+xreadgroup", "+xack", "+xautoclaim", "+xclaim", "+xpending", "+xadd", "+xrange", "+xlen",
		"+eval", "+evalsha", "+set", "+get", "+pexpire", "+del", "+ping",
		"+zadd", "+zrange", "+zrangebyscore", "+zrem", "+time", "+publish", "+spublish",
		"+subscribe", "+unsubscribe", "+ssubscribe", "+sunsubscribe", "+client|id", "+client|unblock",
		"resetkeys", "~app:*", "~{app:*", "resetchannels", "&{app:*"}
	aclStreamsFanOut = []string{"-@all", "+xread", "+xinfo|stream", "resetkeys", "~app:*"}
	// aclStreamsPublisherWaiting is aclStreamsPublisher and +wait, for
	// WaitReplicas.
	aclStreamsPublisherWaiting = []string{"-@all", "+xadd", "+eval", "+evalsha", "+xinfo|groups", "+xpending", "+xrange",
		"+xtrim", "+xlen", "+zadd", "+zrange", "+publish", "+spublish", "+wait",
		"resetkeys", "~app:*", "~{app:*", "resetchannels", "&{app:*"}
)

// The page shows each rule set the tests use, word for word, so that what
// a reader copies is what was tested.
func TestACLRulesAreDocumented(t *testing.T) {
	page, err := os.ReadFile("docs/operating-redis.md")
	require.NoError(t, err)
	for _, rules := range [][]string{aclPubSubPublisher, aclPubSubSubscriber, aclShardedPublisher, aclShardedSubscriber,
		aclStreamsPublisher, aclStreamsSubscriber, aclStreamsFanOut, aclStreamsPublisherWaiting} {
		documented := strings.ReplaceAll(strings.Join(rules, " "), "|", `\|`) // escaped in a Markdown table
		assert.Contains(t, string(page), "`"+documented, "docs/operating-redis.md should show these rules")
	}
	assert.Contains(t, string(page), "`+cluster|slots +command`", "docs/operating-redis.md should say what onCluster adds")
}

// aclClient creates an ACL user with exactly rules on server and returns
// a client logged in as it.
func aclClient(t *testing.T, server *pubsubtest.Server, admin *redis.Client, user string, rules []string) *redis.Client {
	t.Helper()
	pubsubtest.SetACLUser(t, admin, user, "pw", rules)
	client := redis.NewClient(&redis.Options{Addr: server.Addr, Username: user, Password: "pw"})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// assertNoACLDenial fails when Redis refused any command for want of a
// permission.
func assertNoACLDenial(t *testing.T, admin *redis.Client) {
	t.Helper()
	assert.Empty(t, pubsubtest.ACLRefusals(t, admin), "Redis refused commands: the documented ACL rules are not enough")
}

// Each Pub/Sub component runs as an ACL user with exactly the permissions
// docs/operating-redis.md lists for it.
func TestPubSubWithTheDocumentedACL(t *testing.T) {
	pubSubWithACL(t, false, aclPubSubPublisher, aclPubSubSubscriber)
}

// Sharded Pub/Sub runs with the sharded commands alone.
func TestShardedPubSubWithTheDocumentedACL(t *testing.T) {
	pubSubWithACL(t, true, aclShardedPublisher, aclShardedSubscriber)
}

// pubSubWithACL publishes (with and without counting), subscribes, lets a
// topic be unsubscribed for want of use and a quiet connection be pinged,
// as users with exactly the given rules.
func pubSubWithACL(t *testing.T, sharded bool, publisherRules, subscriberRules []string) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: aclClient(t, server, admin, "publisher", publisherRules), Sharded: sharded})
	sub := newSubscriber(t, redisbus.SubscriberConfig{
		Client:  aclClient(t, server, admin, "subscriber", subscriberRules),
		Sharded: sharded, UnsubscribeAfter: time.Millisecond, HealthCheckInterval: 50 * time.Millisecond,
	}, nil)

	messages, err := sub.Subscribe(t.Context(), "app:news")
	require.NoError(t, err)
	publish(t, pub, "app:news", "hi")
	assert.Equal(t, []string{"hi"}, receive(t, messages, 1))
	_, err = pub.PublishCount(t.Context(), "app:news", message.NewMessage(watermill.NewUUID(), []byte("count")))
	require.NoError(t, err)
	assert.Equal(t, []string{"count"}, receive(t, messages, 1))

	// A topic left alone is unsubscribed; a quiet connection is pinged.
	require.NoError(t, sub.SubscribeInitialize("app:other"))
	require.Eventually(t, func() bool { return sub.Stats().Unsubscribed == 1 }, waitTimeout, time.Millisecond)
	assertNoACLDenial(t, admin)
}

// A fan-out Streams subscriber (no group) only reads.
func TestStreamsFanOutWithTheDocumentedACL(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: aclClient(t, server, admin, "publisher", aclStreamsPublisher)})
	fanOut := func(name, startID string) <-chan *message.Message {
		sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
			Client: aclClient(t, server, admin, name, aclStreamsFanOut), StartID: startID,
		}, nil)
		messages, err := sub.Subscribe(t.Context(), "app:prices")
		require.NoError(t, err)
		return messages
	}
	first, second := fanOut("first", "0"), fanOut("second", "") // "": new entries only
	publish(t, pub, "app:prices", "1", "2")
	assert.Equal(t, []string{"1", "2"}, receive(t, first, 2))
	assert.Equal(t, []string{"1", "2"}, receive(t, second, 2))
	assertNoACLDenial(t, admin)
}

// The Streams publisher and a consumer group's subscriber run as ACL
// users with exactly the permissions docs/operating-redis.md lists: publishing and
// trimming, reading, acking, nacking, dead-lettering, delayed messages
// (scheduling, waking, moving, rescheduling), claiming, leasing the
// consumer name, removing idle consumers and closing.
func TestStreamsWithTheDocumentedACL(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t)
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: aclClient(t, server, admin, "publisher", aclStreamsPublisher)})
	subscriberClient := aclClient(t, server, admin, "subscriber", aclStreamsSubscriber)
	config := redisbus.StreamsSubscriberConfig{
		Client: subscriberClient, ConsumerGroup: "g", MaxDeliveries: 2, NackResendDelay: time.Millisecond,
		ClaimMinIdle: 50 * time.Millisecond, CloseTimeout: -1, ConsumerIdleTimeout: time.Millisecond,
	}
	sub := newStreamsSubscriber(t, config, nil)
	messages, err := sub.Subscribe(t.Context(), "app:orders")
	require.NoError(t, err)
	publish(t, pub, "app:orders", "poison", "good")

	poison := next(t, messages)
	require.Equal(t, "poison", string(poison.Payload))
	poison.Nack()
	poison = next(t, messages)
	require.Equal(t, "poison", string(poison.Payload))
	poison.Nack() // its second delivery: dead-lettered
	assert.Equal(t, []string{"good"}, receive(t, messages, 1))
	require.Eventually(t, func() bool { return sub.Stats().DeadLettered == 1 }, waitTimeout, time.Millisecond)

	// A delayed message is scheduled, woken up for, moved; nacked with a
	// delay, it is rescheduled.
	require.NoError(t, pub.Publish("app:orders", delayedMessage("later", time.Now().Add(50*time.Millisecond))))
	later := next(t, messages)
	require.Equal(t, "later", string(later.Payload))
	later.Metadata.Set(delay.DelayedUntilKey, time.Now().Add(50*time.Millisecond).UTC().Format(time.RFC3339Nano))
	later.Nack()
	assert.Equal(t, []string{"later"}, receive(t, messages, 1))
	assert.EqualValues(t, 1, sub.Stats().Rescheduled)

	// The first closes with a message in its handler's hands: it hands it
	// back, and a second consumer claims it.
	publish(t, pub, "app:orders", "handed back")
	require.Equal(t, "handed back", string(next(t, messages).Payload))
	require.NoError(t, sub.Close())
	config.Consumer = "second"
	second := newStreamsSubscriber(t, config, nil)
	claimed, err := second.Subscribe(t.Context(), "app:orders")
	require.NoError(t, err)
	assert.Equal(t, []string{"handed back"}, receive(t, claimed, 1))
	assert.Equal(t, uint64(1), second.Stats().Claimed)
	require.NoError(t, second.Close())
	assertNoACLDenial(t, admin)
}

// Without +client|id and +client|unblock a consumer group's subscriber
// works, and Close cuts its blocking reads off instead of unblocking them.
func TestStreamsSubscriberWithoutClientPermissions(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin := server.Client(t)
	rules := slices.DeleteFunc(slices.Clone(aclStreamsSubscriber), func(rule string) bool {
		return strings.HasPrefix(rule, "+client|")
	})
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: aclClient(t, server, admin, "subscriber", rules), ConsumerGroup: "g",
	}, nil)
	require.NoError(t, err)
	messages, err := sub.Subscribe(t.Context(), "app:orders")
	require.NoError(t, err)
	publish(t, newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: admin}), "app:orders", "job")
	next(t, messages).Ack()
	require.NoError(t, closeWithin(t, 0, sub.Close))
	refused := pubsubtest.ACLRefusals(t, admin)
	assert.Contains(t, fmt.Sprint(refused), "client|id", "the reader asked for its connection's ID")
}

// With WaitReplicas the Streams publisher also sends WAIT, so its
// documented rules add +wait. Without it, Publish fails with Redis'
// refusal, not with ErrNotReplicated: retrying would only store the
// entries again.
func TestStreamsPublisherWaitNeedsTheWaitPermission(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{}) // no replica: WAIT confirms none
	admin := server.Client(t)
	config := redisbus.StreamsPublisherConfig{WaitReplicas: 1, WaitTimeout: 10 * time.Millisecond}

	config.Client = aclClient(t, server, admin, "publisher", aclStreamsPublisher)
	err := newStreamsPublisher(t, config).Publish("app:orders", message.NewMessage(watermill.NewUUID(), []byte("refused")))
	require.Error(t, err)
	assert.NotErrorIs(t, err, redisbus.ErrNotReplicated)
	assert.ErrorContains(t, err, "refused WAIT")
	assert.ErrorContains(t, err, "NOPERM")

	config.Client = aclClient(t, server, admin, "waiting", aclStreamsPublisherWaiting)
	err = newStreamsPublisher(t, config).Publish("app:orders", message.NewMessage(watermill.NewUUID(), []byte("waited")))
	require.ErrorIs(t, err, redisbus.ErrNotReplicated)
	assert.ErrorContains(t, err, "0 of 1 confirmed")
	refusals := pubsubtest.ACLRefusals(t, admin)
	require.Len(t, refusals, 1, "only the user without +wait was refused")
	assert.Contains(t, fmt.Sprint(refusals[0]), "wait")
}

// onCluster adds what go-redis' cluster client needs to rules: it reads
// the slot map (CLUSTER SLOTS, again after a failover or a moved slot) and
// the command table.
func onCluster(rules []string) []string {
	i := slices.IndexFunc(rules, func(r string) bool { return strings.HasPrefix(r, "reset") })
	return slices.Concat(rules[:i], []string{"+cluster|slots", "+command"}, rules[i:])
}

// On Redis Cluster each component runs with its documented rules and
// onCluster's, set on every master: a Streams publisher and a consumer
// group's subscriber (publishing, reading, acking, dead-lettering) and
// sharded Pub/Sub, with topics spread over the masters.
func TestStreamsAndShardedPubSubOnAClusterWithTheDocumentedACL(t *testing.T) {
	cluster := pubsubtest.StartCluster(t, 3)
	var admins []*redis.Client
	for _, addr := range cluster.Addrs {
		admin := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = admin.Close() })
		for user, rules := range map[string][]string{
			"publisher": onCluster(aclStreamsPublisher), "subscriber": onCluster(aclStreamsSubscriber),
			"spublisher": onCluster(aclShardedPublisher), "ssubscriber": onCluster(aclShardedSubscriber),
		} {
			pubsubtest.SetACLUser(t, admin, user, "pw", rules)
		}
		admins = append(admins, admin)
	}
	as := func(user string) *redis.ClusterClient {
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs, Username: user, Password: "pw"})
		t.Cleanup(func() { _ = client.Close() })
		return client
	}
	pub := newStreamsPublisher(t, redisbus.StreamsPublisherConfig{Client: as("publisher")})
	sub := newStreamsSubscriber(t, redisbus.StreamsSubscriberConfig{
		Client: as("subscriber"), ConsumerGroup: "g", MaxDeliveries: 1, CloseTimeout: -1,
	}, nil)
	spub := newPublisher(t, redisbus.PublisherConfig{Client: as("spublisher"), Sharded: true})
	ssub := newSubscriber(t, redisbus.SubscriberConfig{Client: as("ssubscriber"), Sharded: true}, nil)
	masters := map[int]bool{}
	for i := range 6 {
		topic := fmt.Sprintf("app:topic-%d", i)
		masters[cluster.Owner(t, cluster.Slot(t, topic))] = true

		entries, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		publish(t, pub, topic, "poison", "good")
		next(t, entries).Nack() // dead-lettered: MaxDeliveries 1
		assert.Equal(t, []string{"good"}, receive(t, entries, 1))

		messages, err := ssub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		publish(t, spub, topic, "hi")
		assert.Equal(t, []string{"hi"}, receive(t, messages, 1))
	}
	require.Len(t, masters, 3, "the topics spread over every master")
	require.Eventually(t, func() bool { return sub.Stats().DeadLettered == 6 }, waitTimeout, time.Millisecond)
	require.NoError(t, sub.Close())
	for _, admin := range admins {
		assertNoACLDenial(t, admin)
	}
}
