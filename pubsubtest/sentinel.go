package pubsubtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the Sentinels of StartSentinels know the primary by.
const MasterName = "redisbus"

// Sentinels is a primary, a replica and the Sentinels watching them, all
// private processes, as Redis is run for failover without a cluster.
type Sentinels struct {
	// Addrs are the Sentinels' addresses, for redis.FailoverOptions.
	Addrs   []string
	servers []*Server // the primary and the replica, in start order
}

// StartSentinels starts a primary, a replica of it in sync, and n
// Sentinels (quorum n/2+1) that declare the primary down after 500 ms.
func StartSentinels(t testing.TB, n int) *Sentinels {
	t.Helper()
	primary := StartServer(t, ServerOptions{})
	replica := StartServer(t, ServerOptions{})
	ctx := context.Background()
	for _, s := range []*Server{primary, replica} {
		// Redis 7 waits 5 s for more replicas before a diskless full sync.
		if err := s.Client(t).ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
			t.Fatalf("pubsubtest: %v", err)
		}
	}
	host, port, _ := net.SplitHostPort(primary.Addr)
	if err := replica.Client(t).Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatalf("pubsubtest: %v", err)
	}
	waitFor(t, "the replica to sync", func() bool {
		info, err := replica.Client(t).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	s := &Sentinels{servers: []*Server{primary, replica}}
	for range n {
		sentinel := StartServer(t, ServerOptions{sentinelOf: fmt.Sprintf("%s %d", primary.Addr, n/2+1)})
		s.Addrs = append(s.Addrs, sentinel.Addr)
	}
	waitFor(t, "the Sentinels to find the replica and each other", func() bool {
		for _, addr := range s.Addrs {
			c := redis.NewSentinelClient(&redis.Options{Addr: addr})
			replicas, err1 := c.Replicas(ctx, MasterName).Result()
			sentinels, err2 := c.Sentinels(ctx, MasterName).Result()
			_ = c.Close()
			if err1 != nil || err2 != nil || len(replicas) != 1 || len(sentinels) != n-1 {
				return false
			}
		}
		return true
	})
	return s
}

// sentinelArgs writes the Sentinel's configuration file (Sentinel rewrites
// it) and returns its command line.
func (s *Server) sentinelArgs() []string {
	primary, quorum, _ := strings.Cut(s.opts.sentinelOf, " ")
	host, port, _ := net.SplitHostPort(primary)
	conf := filepath.Join(s.dir, fmt.Sprintf("sentinel-%d.conf", s.port))
	_ = os.WriteFile(conf, []byte(strings.Join([]string{
		"port " + strconv.Itoa(s.port),
		"bind 127.0.0.1",
		"dir " + s.dir,
		fmt.Sprintf("sentinel monitor %s %s %s %s", MasterName, host, port, quorum),
		"sentinel down-after-milliseconds " + MasterName + " 500",
		"sentinel failover-timeout " + MasterName + " 5000",
		"",
	}, "\n")), 0o644)
	return []string{conf, "--sentinel"}
}

// readyLine is what the process logs once it serves clients.
func (s *Server) readyLine() string {
	if s.opts.sentinelOf != "" {
		return "+monitor master"
	}
	return "Ready to accept connections"
}

// FailoverClient returns a client that finds the primary through the
// Sentinels, as applications do; closed at the end of the test.
func (s *Sentinels) FailoverClient(t testing.TB) *redis.Client {
	client := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName, SentinelAddrs: s.Addrs})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// PrimaryAddr returns the primary's address as the Sentinels see it.
func (s *Sentinels) PrimaryAddr(t testing.TB) string {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addrs[0]})
	defer c.Close()
	addr, err := c.GetMasterAddrByName(context.Background(), MasterName).Result()
	if err != nil {
		t.Fatalf("pubsubtest: %v", err)
	}
	return net.JoinHostPort(addr[0], addr[1])
}

// Primary returns the server that is the primary now.
func (s *Sentinels) Primary(t testing.TB) *Server {
	t.Helper()
	addr := s.PrimaryAddr(t)
	for _, server := range s.servers {
		if server.Addr == addr {
			return server
		}
	}
	t.Fatalf("pubsubtest: no server at %s", addr)
	return nil
}

// Failover has the Sentinels hand the primary's role to the replica, the
// way an operator does before maintenance (SENTINEL FAILOVER), and returns
// once the new primary takes writes.
func (s *Sentinels) Failover(t testing.TB) {
	t.Helper()
	old := s.PrimaryAddr(t)
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addrs[0]})
	defer c.Close()
	if err := c.Failover(context.Background(), MasterName).Err(); err != nil {
		t.Fatalf("pubsubtest: SENTINEL FAILOVER: %v", err)
	}
	s.awaitNewPrimary(t, old)
}

// KillPrimary kills the primary (SIGKILL) and returns once the Sentinels
// promoted the replica and it takes writes. The old primary stays down.
func (s *Sentinels) KillPrimary(t testing.TB) {
	t.Helper()
	old := s.Primary(t)
	old.Kill(t)
	s.awaitNewPrimary(t, old.Addr)
}

func (s *Sentinels) awaitNewPrimary(t testing.TB, old string) {
	t.Helper()
	waitFor(t, "a new primary", func() bool {
		addr := s.PrimaryAddr(t)
		if addr == old {
			return false
		}
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "role:master")
	})
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("pubsubtest: waited 30s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
