package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// The cluster section: many topics on private Redis Clusters of 1 and of
// 3 masters. Streams keys and shard channels hash to slots by topic name,
// so topics whose names share no hash tag spread over the masters, and
// with them the work: what falls on each master per message is what
// divides as masters are added.
const (
	cClusterStreams = "redisbus Streams, cluster"
	cClusterSharded = "redisbus Pub/Sub (Sharded), cluster"
	// Plain Pub/Sub, for comparison: a PUBLISH on a cluster reaches every
	// node, so every master pays for every message.
	cClusterPlain = "redisbus Pub/Sub (not sharded), cluster"
)

// clusterContenders are the cluster section's contenders, in its order.
var clusterContenders = []string{cClusterStreams, cClusterSharded, cClusterPlain}

// clusterWorkload names the cluster section's workload on n masters.
func clusterWorkload(masters int) string {
	if masters == 1 {
		return "cluster of 1 master"
	}
	return fmt.Sprintf("cluster of %d masters", masters)
}

// benchCluster is one private cluster and the bench's plain clients of its
// masters, which read INFO without counting round trips.
type benchCluster struct {
	masters int
	cluster *pubsubtest.Cluster
	nodes   []*redis.Client // one per master, in cluster.Addrs' order
	admin   *redis.ClusterClient
}

func startBenchCluster(ctx context.Context, masters int) (*benchCluster, error) {
	c, err := pubsubtest.NewCluster(masters)
	if err != nil {
		return nil, err
	}
	bc := &benchCluster{masters: masters, cluster: c, admin: redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})}
	for _, addr := range c.Addrs {
		bc.nodes = append(bc.nodes, redis.NewClient(&redis.Options{Addr: addr}))
	}
	if err := bc.admin.Ping(ctx).Err(); err != nil {
		bc.close()
		return nil, err
	}
	return bc, nil
}

func (bc *benchCluster) close() {
	_ = bc.admin.Close()
	for _, n := range bc.nodes {
		_ = n.Close()
	}
	bc.cluster.Close()
}

// client returns a cluster client whose round trips trips counts: the hook
// is on every node's client, where a pipeline split over the masters makes
// one round trip per master. reads is for a subscriber's blocking reads:
// no retries (as StreamsSubscriberConfig.ReadClient asks), and a pool
// large enough for one waiting read per topic.
func (bc *benchCluster) client(trips *roundTrips, reads bool) *redis.ClusterClient {
	opt := &redis.ClusterOptions{Addrs: bc.cluster.Addrs}
	if reads {
		opt.MaxRetries, opt.PoolSize = -1, 4096
	}
	c := redis.NewClusterClient(opt)
	// Before the first command, so that every node's client has the hook.
	c.OnNewNode(func(node *redis.Client) { node.AddHook(trips) })
	return c
}

// topicsPerMaster counts how many of topics each master owns.
func (bc *benchCluster) topicsPerMaster(ctx context.Context, topics []string) ([]int, error) {
	//lint:ignore SA1019 go-redis v9's ClusterClient routes by CLUSTER SLOTS too
	ranges, err := bc.nodes[0].ClusterSlots(ctx).Result()
	if err != nil {
		return nil, err
	}
	counts := make([]int, bc.masters)
	for _, topic := range topics {
		slot, err := bc.nodes[0].ClusterKeySlot(ctx, topic).Result()
		if err != nil {
			return nil, err
		}
		for _, r := range ranges {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
				i, ok := bc.master(r.Nodes[0].Addr)
				if !ok {
					return nil, fmt.Errorf("CLUSTER SLOTS names %s, not a master of the cluster", r.Nodes[0].Addr)
				}
				counts[i]++
			}
		}
	}
	return counts, nil
}

// master returns the index of the master at addr, by port: a node that
// never met another (a cluster of one) does not know its own IP, and says
// so with an empty host.
func (bc *benchCluster) master(addr string) (int, bool) {
	_, port, _ := net.SplitHostPort(addr)
	for i, a := range bc.cluster.Addrs {
		if _, p, _ := net.SplitHostPort(a); p == port {
			return i, true
		}
	}
	return 0, false
}

// clusterTopics returns k topic names without a hash tag, so that they
// hash to slots all over the cluster.
func clusterTopics(k int) []string {
	prefix := "bench-cluster-" + watermill.NewShortUUID() + "-"
	topics := make([]string, k)
	for i := range topics {
		topics[i] = prefix + strconv.Itoa(i)
	}
	return topics
}

// clusterStreams publishes n messages over the topics from 64 goroutines,
// one per Publish, then consumes them with one subscriber of a consumer
// group through a Router with a handler per topic.
func clusterStreams(ctx context.Context, bc *benchCluster, trips *roundTrips, n, topicCount int) (sample, error) {
	s := sample{contender: cClusterStreams, family: "streams", workload: clusterWorkload(bc.masters), size: 64}
	topics := clusterTopics(topicCount)
	client, reads := bc.client(trips, false), bc.client(trips, true)
	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: client}, nil)
	must(err)
	sub, err := redisbus.NewStreamsSubscriber(redisbus.StreamsSubscriberConfig{
		Client: client, ReadClient: reads, ConsumerGroup: benchGroup, BlockTime: 100 * time.Millisecond,
	}, nil)
	must(err)
	release := closer(pub, sub, client, reads)
	msgs := messages(n, 64)
	t := newTracker(n)
	err = bc.measure(ctx, trips, &s, n, func() error {
		if err := initTopics(sub, topics); err != nil {
			return err
		}
		pubDur, err := publishOver(ctx, pub, topics, msgs)
		if err != nil {
			return err
		}
		subDur, err := consume(ctx, sub, topics, t, nil)
		s.pubRate, s.subRate = rate(n, pubDur), rate(n, subDur)
		return err
	})
	release() // flushes acks
	t.tally(&s)
	return bc.finish(ctx, s, topics, true, err)
}

// clusterPubSub publishes n messages over the topics from 64 goroutines,
// one per Publish, while one subscriber delivers them to a Router. Sharded:
// SPUBLISH, and a subscriber connection per topic, to the master that owns
// it; otherwise PUBLISH through one master (see redisbus.NewPublisher),
// and one subscriber connection for all topics.
func clusterPubSub(ctx context.Context, bc *benchCluster, trips *roundTrips, n, topicCount int, sharded bool) (sample, error) {
	s := sample{contender: cClusterPlain, family: "pubsub", workload: clusterWorkload(bc.masters), size: 64}
	if sharded {
		s.contender = cClusterSharded
	}
	topics := clusterTopics(topicCount)
	client := bc.client(trips, false)
	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: client, Sharded: sharded}, nil)
	must(err)
	sub, err := redisbus.NewSubscriber(redisbus.SubscriberConfig{Client: client, Sharded: sharded, InboxSize: n + 1024, InboxBytes: -1}, nil)
	must(err)
	release := closer(pub, sub, client)
	msgs := messages(n, 64)
	t := newTracker(n)
	err = bc.measure(ctx, trips, &s, n, func() error {
		if err := initTopics(sub, topics); err != nil {
			return err
		}
		stop, err := startRouter(ctx, sub, topics, t, nil)
		if err != nil {
			return err
		}
		defer stop()
		start := time.Now()
		pubDur, err := publishOver(ctx, pub, topics, msgs)
		if err != nil {
			return err
		}
		err = t.wait(ctx, workloadTimeout)
		s.pubRate, s.subRate = rate(n, pubDur), rate(n, time.Since(start))
		return err
	})
	release()
	t.tally(&s)
	return bc.finish(ctx, s, topics, false, err)
}

// initTopics makes sure the subscriber will see what is published to the
// topics from now on.
func initTopics(sub message.SubscribeInitializer, topics []string) error {
	for _, topic := range topics {
		if err := sub.SubscribeInitialize(topic); err != nil {
			return err
		}
	}
	return nil
}

// publishOver publishes msgs from 64 goroutines, one per Publish, message
// i to topic i modulo the topics.
func publishOver(ctx context.Context, pub message.Publisher, topics []string, msgs []*message.Message) (time.Duration, error) {
	return publishAll(ctx, pub, len(msgs), 64, func(i int) error { return pub.Publish(topics[i%len(topics)], msgs[i]) })
}

// finish records where the topics were and what the group left pending,
// and deletes the streams.
func (bc *benchCluster) finish(ctx context.Context, s sample, topics []string, streams bool, err error) (sample, error) {
	spread, spreadErr := bc.topicsPerMaster(ctx, topics)
	s.masterTopics = spread
	if streams {
		for _, topic := range topics {
			if p, err := bc.admin.XPending(ctx, topic, benchGroup).Result(); err == nil {
				s.pending += p.Count
			}
			// One key per DEL: the streams are in different slots.
			_ = bc.admin.Del(ctx, topic).Err()
			_ = bc.admin.Del(ctx, topic+":dead").Err()
		}
	}
	return s, errors.Join(err, spreadErr)
}

// measure is measure for a cluster: Redis' costs are summed over the
// masters, and kept per master too.
func (bc *benchCluster) measure(ctx context.Context, trips *roundTrips, s *sample, n int, run func() error) error {
	return measureOn(ctx, bc.nodes, trips, s, n, run)
}

// clusterRun runs the cluster section's contenders once on bc.
func clusterRun(ctx context.Context, bc *benchCluster, trips *roundTrips, only string, n, topics int, record func(sample, error)) {
	for _, name := range clusterContenders {
		if !selected(name, only) {
			continue
		}
		switch name {
		case cClusterStreams:
			record(clusterStreams(ctx, bc, trips, n, topics))
		case cClusterSharded:
			record(clusterPubSub(ctx, bc, trips, n, topics, true))
		case cClusterPlain:
			record(clusterPubSub(ctx, bc, trips, n, topics, false))
		}
	}
}

// selected reports whether -only selects the contender name.
func selected(name, only string) bool {
	return only == "" || strings.Contains(name, only)
}

// floats formats per-master values for the console, e.g. "[1.20 1.31]".
func floats(values []float64) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = strconv.FormatFloat(v, 'f', 2, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
