package pubsubtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a private Redis Cluster of masters without replicas, on
// loopback.
type Cluster struct {
	// Addrs are the nodes' host:port.
	Addrs []string
}

// StartCluster starts a Redis Cluster of n masters for t, each owning an
// equal share of the 16384 slots, and returns once every node reports the
// cluster as ok. It is stopped when t ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{}
	var clients []*redis.Client
	for range n {
		s, err := startServer(ServerOptions{Cluster: true}, dir)
		if err != nil {
			t.Fatalf("pubsubtest: cluster node: %v", err)
		}
		t.Cleanup(s.stop)
		c.Addrs = append(c.Addrs, s.Addr)
		client := redis.NewClient(&redis.Options{Addr: s.Addr})
		t.Cleanup(func() { _ = client.Close() })
		clients = append(clients, client)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const slots = 16384
	for i, client := range clients {
		first, last := i*slots/n, (i+1)*slots/n-1
		if err := client.ClusterAddSlotsRange(ctx, first, last).Err(); err != nil {
			t.Fatalf("pubsubtest: cluster addslots: %v", err)
		}
	}
	for _, addr := range c.Addrs[1:] {
		host, port, _ := strings.Cut(addr, ":")
		if err := clients[0].ClusterMeet(ctx, host, port).Err(); err != nil {
			t.Fatalf("pubsubtest: cluster meet: %v", err)
		}
	}
	// The nodes agree through the cluster bus, which has no notification a
	// client can wait on: ask until all say ok.
	for _, client := range clients {
		for {
			info, err := client.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", n)) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("pubsubtest: the cluster did not form within 30s: %v\n%s", err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Client returns a cluster client of c, closed when t ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = client.Close() })
	return client
}
