package wsroute_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// recoveryBound is how soon routing must deliver again after Redis failed
// over: far above what the failover tests measure (about a second), and
// below what a node that does not follow a failover by itself waits for
// something else to rescue it: 60 s until go-redis reads a cluster's slot
// map again, about 10 s until Sentinel turns a replaced primary into a
// replica (the subscriptions on it then hear messages again).
const recoveryBound = 6 * time.Second

// traffic sends numbered messages from a node to a client without pause
// and records what each send reported and what the client received.
type traffic struct {
	mu        sync.Mutex
	sent      int
	delivered map[string]time.Time // payload → when reported Delivered
	received  map[string]bool
	statuses  runs
}

func (tr *traffic) send(ctx context.Context, from *testNode, to string) {
	for i := 0; ctx.Err() == nil; i++ {
		payload := fmt.Sprintf("%s %d", to, i)
		result, err := from.SendToClient(ctx, to, []byte(payload))
		tr.mu.Lock()
		tr.sent++
		switch {
		case err != nil:
			tr.statuses.add("error")
		case result.Status == wsroute.Delivered:
			tr.delivered[payload] = time.Now()
			tr.statuses.add("delivered")
		default:
			tr.statuses.add(result.Status.String())
		}
		tr.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func (tr *traffic) receive(ctx context.Context, ws *websocket.Conn) {
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		tr.mu.Lock()
		tr.received[string(data)] = true
		tr.mu.Unlock()
	}
}

// String returns what the sends reported, for a failure message.
func (tr *traffic) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return fmt.Sprint(tr.statuses)
}

// deliveredSince reports whether a send that began after start was
// reported Delivered and reached the client.
func (tr *traffic) deliveredSince(start time.Time) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for payload, at := range tr.delivered {
		if at.After(start) && tr.received[payload] {
			return true
		}
	}
	return false
}

// longestPause returns the longest time since start without a send that
// was reported Delivered and reached the client.
func (tr *traffic) longestPause(start time.Time) time.Duration {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var times []time.Time
	for payload, at := range tr.delivered {
		if at.After(start) && tr.received[payload] {
			times = append(times, at)
		}
	}
	slices.SortFunc(times, time.Time.Compare)
	var longest time.Duration
	last := start
	for _, at := range times {
		longest = max(longest, at.Sub(last))
		last = at
	}
	return longest
}

// unreceived returns the sends reported Delivered before `before` that
// did not reach the client.
func (tr *traffic) unreceived(before time.Time) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var missing []string
	for payload, at := range tr.delivered {
		if at.Before(before) && !tr.received[payload] {
			missing = append(missing, payload)
		}
	}
	return missing
}

// On a Redis Cluster of 3 masters with a replica each, two nodes sending
// to each other's clients route again by themselves when the master that
// holds their registry and channels hands its slots to its replica
// (CLUSTER FAILOVER) and when it is killed (SIGKILL, its replica made to
// take over). Through the graceful failover every send reported Delivered
// reaches its client; the kill may take along the few in flight on the
// killed master's subscription connections.
func TestRoutingCarriesOnThroughClusterFailovers(t *testing.T) {
	cluster := pubsubtest.StartCluster(t, 3)
	cluster.AddReplicas(t)
	client := cluster.Client(t)
	prefix := "{" + pubsubtest.Topic(t) + "}:"
	a := startNode(t, client, wsroute.Config{NodeID: "a", Prefix: prefix, NodeTTL: time.Second})
	b := startNode(t, client, wsroute.Config{NodeID: "b", Prefix: prefix, NodeTTL: time.Second})
	alice, bob := a.connect(t, "alice"), b.connect(t, "bob")
	master := cluster.Owner(t, cluster.Slot(t, prefix))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	toBob := &traffic{delivered: map[string]time.Time{}, received: map[string]bool{}}
	toAlice := &traffic{delivered: map[string]time.Time{}, received: map[string]bool{}}
	var running sync.WaitGroup
	for _, run := range []func(){
		func() { toBob.send(ctx, a, "bob") }, func() { toBob.receive(ctx, bob) },
		func() { toAlice.send(ctx, b, "alice") }, func() { toAlice.receive(ctx, alice) },
	} {
		running.Go(run)
	}
	flows := map[string]*traffic{"a to bob": toBob, "b to alice": toAlice}
	// awaitDelivered waits for a send that began after Redis had failed
	// over to be delivered, and reports the longest pause since start.
	awaitDelivered := func(start time.Time, what string) {
		t.Helper()
		done := time.Now()
		for name, tr := range flows {
			require.Eventually(t, func() bool { return tr.deliveredSince(done) }, recoveryBound, 5*time.Millisecond,
				"%s: nothing delivered within %s of %s (sends: %v)", name, recoveryBound, what, tr)
			t.Logf("%s: %s: longest pause in deliveries %s", what, name, tr.longestPause(start).Round(time.Millisecond))
		}
	}
	awaitDelivered(time.Now(), "the start")

	start := time.Now()
	cluster.Failover(t, master)
	awaitDelivered(start, "a graceful failover (CLUSTER FAILOVER)")
	killed := time.Now()
	cluster.KillMaster(t, master)
	awaitDelivered(killed, "the master killed (SIGKILL)")

	cancel()
	_ = alice.CloseNow()
	_ = bob.CloseNow()
	running.Wait()
	for name, tr := range flows {
		assert.Empty(t, tr.unreceived(killed), "%s: reported Delivered but not received", name)
		t.Logf("%s: %d sends, reported Delivered but lost by the kill: %d; statuses %v",
			name, tr.sent, len(tr.unreceived(time.Now())), tr.statuses)
	}
}
