package pubsubtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a private Redis Cluster on loopback: masters, and the
// replicas AddReplica adds.
type Cluster struct {
	// Addrs are the masters' host:port.
	Addrs []string
	// Replicas are the replicas' host:port.
	Replicas []string

	nodes   []*redis.Client // one per address, in the same order
	servers []*Server       // the masters NewCluster started, stopped by Close
	dir     string          // removed by Close: made by NewCluster

	// The processes behind Addrs and Replicas, in the same order: Failover
	// and KillMaster swap a master and its replica.
	masterServers, replicaServers []*Server
	replicaNodes                  []*redis.Client
}

// StartCluster starts a Redis Cluster of n masters for t, each owning an
// equal share of the 16384 slots, and returns once every node reports the
// cluster as ok. It is stopped when t ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := newCluster(n, t.TempDir())
	if err != nil {
		t.Fatalf("pubsubtest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// NewCluster is StartCluster for code without a testing.TB, such as the
// benchmark: the caller stops the cluster with Close.
func NewCluster(n int) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "redisbus-cluster-")
	if err != nil {
		return nil, err
	}
	c, err := newCluster(n, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pubsubtest: %w", err)
	}
	c.dir = dir
	return c, nil
}

// Close stops the masters (not the replicas of AddReplicas, which stop
// with their test) and removes the directory NewCluster made.
func (c *Cluster) Close() {
	for _, client := range c.nodes {
		_ = client.Close()
	}
	for _, s := range c.servers {
		s.stop()
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// newCluster starts the n masters of a cluster in dir; on an error it
// stops what it started.
func newCluster(n int, dir string) (_ *Cluster, err error) {
	c := &Cluster{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for range n {
		s, err := startServer(ServerOptions{Cluster: true}, dir)
		if err != nil {
			return nil, fmt.Errorf("cluster node: %w", err)
		}
		c.servers = append(c.servers, s)
		c.masterServers = append(c.masterServers, s)
		c.Addrs = append(c.Addrs, s.Addr)
		c.nodes = append(c.nodes, redis.NewClient(&redis.Options{Addr: s.Addr}))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const slots = 16384
	for i, client := range c.nodes {
		first, last := i*slots/n, (i+1)*slots/n-1
		if err := client.ClusterAddSlotsRange(ctx, first, last).Err(); err != nil {
			return nil, fmt.Errorf("cluster addslots: %w", err)
		}
	}
	for _, addr := range c.Addrs[1:] {
		host, port, _ := strings.Cut(addr, ":")
		if err := c.nodes[0].ClusterMeet(ctx, host, port).Err(); err != nil {
			return nil, fmt.Errorf("cluster meet: %w", err)
		}
	}
	// The nodes agree through the cluster bus, which has no notification a
	// client can wait on: ask until all say ok.
	for _, client := range c.nodes {
		for {
			info, err := client.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", n)) {
				break
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("the cluster did not form within 30s: %v\n%s", err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, nil
}

// Client returns a cluster client of c, closed when t ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// AddReplicas starts a replica of each master, stopped when t ends, and
// returns once they are in sync and every master lists them for their
// masters' slots (so a client made from then on sees them). Replicas[i]
// replicates Addrs[i].
func (c *Cluster) AddReplicas(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("pubsubtest: cluster replicas: %s: %v", what, err)
		}
	}
	// await polls: the cluster bus has nothing a client can wait on.
	await := func(what string, done func() bool) {
		t.Helper()
		for !done() {
			if ctx.Err() != nil {
				t.Fatalf("pubsubtest: cluster replicas: not %s within 60s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	masterIDs := make([]string, len(c.nodes))
	replicas := make([]*redis.Client, len(c.nodes))
	for i, master := range c.nodes {
		id, err := master.Do(ctx, "CLUSTER", "MYID").Text()
		must("cluster myid", err)
		masterIDs[i] = id
		// An empty data set syncs at once, rather than after the default
		// 5s wait for more replicas.
		must("config set", master.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err())
		s, err := startServer(ServerOptions{Cluster: true}, t.TempDir()) // a directory of its own for the synced RDB
		must("start", err)
		t.Cleanup(s.stop)
		replica := redis.NewClient(&redis.Options{Addr: s.Addr})
		t.Cleanup(func() { _ = replica.Close() })
		replicas[i] = replica
		c.Replicas = append(c.Replicas, s.Addr)
		c.replicaServers = append(c.replicaServers, s)
		host, port, _ := strings.Cut(c.Addrs[i], ":")
		must("cluster meet", replicas[i].ClusterMeet(ctx, host, port).Err())
	}
	for i, replica := range replicas {
		await("knowing the master", func() bool {
			nodes, err := replica.ClusterNodes(ctx).Result()
			return err == nil && strings.Contains(nodes, masterIDs[i])
		})
		must("cluster replicate", replica.Do(ctx, "CLUSTER", "REPLICATE", masterIDs[i]).Err())
	}
	c.replicaNodes = replicas
	for _, replica := range replicas {
		await("in sync", func() bool {
			info, err := replica.Info(ctx, "replication").Result()
			return err == nil && strings.Contains(info, "master_link_status:up")
		})
	}
	// A master lists a replica once gossip told it the replica synced.
	for _, node := range c.nodes {
		await("listed by every master", func() bool {
			ranges, err := slotMap(ctx, node)
			if err != nil {
				return false
			}
			listed := 0
			for _, r := range ranges {
				for i, addr := range c.Addrs {
					if len(r.Nodes) == 2 && r.Nodes[0].Addr == addr && r.Nodes[1].Addr == c.Replicas[i] {
						listed++
					}
				}
			}
			return listed == len(ranges)
		})
	}
}

// Slot returns the hash slot of key (or of a channel name).
func (c *Cluster) Slot(t testing.TB, key string) int {
	t.Helper()
	slot, err := c.nodes[0].ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("pubsubtest: cluster keyslot: %v", err)
	}
	return int(slot)
}

// Owner returns the index in Addrs of the master that owns slot.
func (c *Cluster) Owner(t testing.TB, slot int) int {
	t.Helper()
	ranges, err := slotMap(context.Background(), c.nodes[0])
	if err != nil {
		t.Fatalf("pubsubtest: cluster slots: %v", err)
	}
	owner := ownerIn(ranges, slot)
	for i, addr := range c.Addrs {
		if addr == owner {
			return i
		}
	}
	t.Fatalf("pubsubtest: no master owns slot %d: %v", slot, ranges)
	return -1
}

// MoveSlot moves slot, and the keys in it, to the master Addrs[to], the
// way an operator reshards: CLUSTER SETSLOT IMPORTING on the target and
// MIGRATING on the source, MIGRATE of every key, then CLUSTER SETSLOT
// NODE on the target, the source and every other master. When the source
// gives the slot up, Redis 7.0 unsubscribes the clients of the slot's
// shard channels on it (each gets an SUNSUBSCRIBE it did not ask for).
// MoveSlot returns once every master names the new owner.
func (c *Cluster) MoveSlot(t testing.TB, slot, to int) {
	t.Helper()
	c.BeginSlotMove(t, slot, to)()
}

// BeginSlotMove does the first half of MoveSlot: it leaves slot migrating
// from its owner to Addrs[to], with its keys moved already, so that the
// owner answers commands on them with ASK (clients must send them to the
// target, after ASKING). The function it returns finishes the move.
func (c *Cluster) BeginSlotMove(t testing.TB, slot, to int) (finish func()) {
	t.Helper()
	// Generous: CI once saw a loaded machine stall for about 20s.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	from := c.Owner(t, slot)
	if from == to {
		cancel()
		t.Fatalf("pubsubtest: slot %d is on %s already", slot, c.Addrs[to])
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			cancel()
			t.Fatalf("pubsubtest: move slot %d from %s to %s: %s: %v", slot, c.Addrs[from], c.Addrs[to], what, err)
		}
	}
	id := func(i int) string {
		t.Helper()
		myID, err := c.nodes[i].Do(ctx, "CLUSTER", "MYID").Text()
		must("cluster myid", err)
		return myID
	}
	source, target := c.nodes[from], c.nodes[to]
	sourceID, targetID := id(from), id(to)
	must("importing", target.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", sourceID).Err())
	must("migrating", source.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", targetID).Err())
	host, port, _ := strings.Cut(c.Addrs[to], ":")
	migrate := func() {
		t.Helper()
		for {
			keys, err := source.ClusterGetKeysInSlot(ctx, slot, 100).Result()
			must("getkeysinslot", err)
			if len(keys) == 0 {
				return
			}
			args := []any{"MIGRATE", host, port, "", 0, 10_000, "KEYS"}
			for _, k := range keys {
				args = append(args, k)
			}
			must("migrate", source.Do(ctx, args...).Err())
		}
	}
	migrate()
	return func() {
		t.Helper()
		defer cancel()
		migrate() // keys written on the source meanwhile, if any
		// Target first, so that the source, once it lets go, redirects to
		// a node that already serves the slot.
		order := []int{to, from}
		for i := range c.nodes {
			if i != to && i != from {
				order = append(order, i)
			}
		}
		for _, i := range order {
			must("setslot node on "+c.Addrs[i], c.nodes[i].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", targetID).Err())
		}
		for i := range c.nodes {
			c.awaitOwner(ctx, t, i, slot, to, targetID)
		}
	}
}

// awaitOwner returns once the master Addrs[i] names Addrs[to] the owner of
// slot. A node that still names another after a second is told again: a
// ping the old owner sent before it let go may reach a node after its
// SETSLOT and take the slot back. Errors are retried until ctx ends (CI saw
// a CLUSTER SLOTS outlast a loaded machine's stall).
func (c *Cluster) awaitOwner(ctx context.Context, t testing.TB, i, slot, to int, targetID string) {
	t.Helper()
	node := c.nodes[i]
	var owner string
	var err error
	told := time.Now()
	for {
		var ranges []redis.ClusterSlot
		ranges, err = slotMap(ctx, node)
		if err == nil {
			owner = ownerIn(ranges, slot)
			if owner == c.Addrs[to] {
				return
			}
			if time.Since(told) > time.Second {
				err = node.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", targetID).Err()
				told = time.Now()
			}
		}
		if ctx.Err() != nil {
			last, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			nodes, _ := node.ClusterNodes(last).Result()
			cancel()
			t.Fatalf("pubsubtest: %s does not name %s as the owner of slot %d: it names %q (last error: %v); its CLUSTER NODES:\n%s",
				c.Addrs[i], c.Addrs[to], slot, owner, err, nodes)
		}
		time.Sleep(20 * time.Millisecond) // the cluster bus has nothing to wait on
	}
}

// slotMap is what node tells clients about slots and their nodes: CLUSTER
// SLOTS, which go-redis' cluster client reads (CLUSTER SHARDS, which
// replaces it, would not show what the client sees).
func slotMap(ctx context.Context, node *redis.Client) ([]redis.ClusterSlot, error) {
	//lint:ignore SA1019 go-redis v9's ClusterClient loads its state with CLUSTER SLOTS
	return node.ClusterSlots(ctx).Result()
}

// ownerIn returns the address of the master that ranges give slot to.
func ownerIn(ranges []redis.ClusterSlot, slot int) string {
	for _, r := range ranges {
		if r.Start <= slot && slot <= r.End && len(r.Nodes) > 0 {
			return r.Nodes[0].Addr
		}
	}
	return ""
}
