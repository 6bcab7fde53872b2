package pubsubtest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Failover hands master i's slots to its replica the way an operator does
// before maintenance: CLUSTER FAILOVER on the replica, which first waits
// until the replica has every write of the master, so nothing the master
// acknowledged is lost. It returns once every master names the replica as
// the owner of those slots; from then on Addrs[i] is the new master and
// Replicas[i] the old one, now its replica. AddReplicas must have run.
func (c *Cluster) Failover(t testing.TB, i int) {
	t.Helper()
	c.takeOver(t, i, true, "FAILOVER")
	c.Addrs[i], c.Replicas[i] = c.Replicas[i], c.Addrs[i]
	c.nodes[i], c.replicaNodes[i] = c.replicaNodes[i], c.nodes[i]
	c.masterServers[i], c.replicaServers[i] = c.replicaServers[i], c.masterServers[i]
}

// KillMaster kills master i with SIGKILL, as a crash would, and has its
// replica take over at once with CLUSTER FAILOVER FORCE, as an
// orchestrator would (the cluster would do it by itself only after
// cluster-node-timeout, 5 s here). Writes the master acknowledged but had
// not yet sent to the replica are lost, as in production. KillMaster
// returns once every live master names the replica as the owner; from then
// on Addrs[i] is the new master and Replicas[i] is empty: it has no
// replica. AddReplicas must have run.
func (c *Cluster) KillMaster(t testing.TB, i int) {
	t.Helper()
	if c.Replicas[i] == "" {
		t.Fatalf("pubsubtest: master %s has no replica to take over", c.Addrs[i])
	}
	c.masterServers[i].Kill(t)
	c.takeOver(t, i, false, "FAILOVER", "FORCE")
	_ = c.nodes[i].Close()
	c.Addrs[i], c.Replicas[i] = c.Replicas[i], ""
	c.nodes[i], c.replicaNodes[i] = c.replicaNodes[i], nil
	c.masterServers[i], c.replicaServers[i] = c.replicaServers[i], nil
}

// takeOver sends CLUSTER args to replica i and waits until every running
// node knows it as a master and the owner of master i's slots, and, when
// graceful, knows master i as a replica.
func (c *Cluster) takeOver(t testing.TB, i int, graceful bool, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.replicaNodes == nil || c.replicaNodes[i] == nil {
		t.Fatalf("pubsubtest: master %s has no replica", c.Addrs[i])
	}
	replica, from, to := c.replicaNodes[i], c.Addrs[i], c.Replicas[i]
	slot := -1 // one of master i's
	if ranges, err := slotMap(ctx, replica); err == nil {
		for _, r := range ranges {
			if len(r.Nodes) > 0 && r.Nodes[0].Addr == from {
				slot = int(r.Start)
				break
			}
		}
	}
	if slot < 0 {
		t.Fatalf("pubsubtest: %s owns no slots", from)
	}
	command := []any{"CLUSTER"}
	for _, a := range args {
		command = append(command, a)
	}
	if err := replica.Do(ctx, command...).Err(); err != nil {
		t.Fatalf("pubsubtest: CLUSTER %s on %s: %v", strings.Join(args, " "), to, err)
	}
	// The cluster bus has nothing a client can wait on: ask until all agree.
	// Every running node must know the new roles, not only the masters'
	// slot maps: a node that still took the old master for a master would
	// refuse its vote in the next failover of these slots.
	agreed := func() bool {
		info, err := replica.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "role:master") {
			return false
		}
		for _, node := range append(c.nodes[:i:i], c.nodes[i+1:]...) {
			ranges, err := slotMap(ctx, node)
			if err != nil || ownerIn(ranges, slot) != to {
				return false
			}
		}
		for _, node := range c.running() {
			if !graceful && node == c.nodes[i] {
				continue // killed
			}
			nodes, err := node.ClusterNodes(ctx).Result()
			if err != nil || roleIn(nodes, to) != "master" || (graceful && roleIn(nodes, from) != "slave") {
				return false
			}
		}
		return true
	}
	for !agreed() {
		if ctx.Err() != nil {
			t.Fatalf("pubsubtest: the cluster did not hand %s's slots to %s within 30s", from, to)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running returns a client of every master and replica (the master
// KillMaster kills is among them until it returns).
func (c *Cluster) running() []*redis.Client {
	nodes := slices.Clone(c.nodes)
	for _, node := range c.replicaNodes {
		if node != nil { // a killed master's replica has none
			nodes = append(nodes, node)
		}
	}
	return nodes
}

// roleIn returns "master" or "slave" for the node at addr in the output of
// CLUSTER NODES, or "" if it is not listed or is failing.
func roleIn(nodes, addr string) string {
	for _, line := range strings.Split(nodes, "\n") {
		// <id> <ip:port@cport> <flags> ...
		fields := strings.Fields(line)
		if len(fields) < 3 || !strings.HasPrefix(fields[1], addr+"@") {
			continue
		}
		flags := strings.Split(fields[2], ",")
		if slices.Contains(flags, "fail") || slices.Contains(flags, "fail?") {
			return ""
		}
		for _, role := range []string{"master", "slave"} {
			if slices.Contains(flags, role) {
				return role
			}
		}
	}
	return ""
}
