package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// replicatedEnv returns the env of the contenders that need a primary with
// a replica (WaitReplicas): REDIS_URL's server when it has a replica,
// otherwise a private primary and replica the bench starts (and stop
// stops). where says what it is, for the report; err says why there is
// none.
func replicatedEnv(ctx context.Context, e *env) (r *env, stop func(), where string, err error) {
	if !e.private {
		if n, err := connectedReplicas(ctx, e.admin); err == nil && n > 0 {
			return &env{opt: e.opt, admin: e.admin, trips: e.trips}, func() {},
				fmt.Sprintf("the `REDIS_URL` server itself, which has %d replica(s)", n), nil
		}
	}
	primary, err := pubsubtest.NewServer(pubsubtest.ServerOptions{})
	if err != nil {
		return nil, nil, "", err
	}
	admin := redis.NewClient(&redis.Options{Addr: primary.Addr})
	var replica *pubsubtest.Server
	stop = func() {
		_ = admin.Close()
		if replica != nil {
			replica.Close()
		}
		primary.Close()
	}
	// Redis 7 waits 5 s for more replicas before a diskless full sync.
	if err := admin.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		stop()
		return nil, nil, "", err
	}
	if replica, err = pubsubtest.NewServer(pubsubtest.ServerOptions{ReplicaOf: primary.Addr}); err != nil {
		stop()
		return nil, nil, "", err
	}
	// WAIT returns once the replica has synced and acknowledged.
	if n, err := admin.Do(ctx, "WAIT", 1, 30_000).Int(); err != nil || n < 1 {
		stop()
		return nil, nil, "", fmt.Errorf("the replica did not sync within 30 s (WAIT: %d, %v)", n, err)
	}
	opt := &redis.Options{Addr: primary.Addr}
	return &env{opt: opt, admin: admin, trips: e.trips, private: true}, stop,
		fmt.Sprintf("a private primary (%s) with one replica (%s), `redis-server` processes the bench started on loopback with persistence off, used by nothing else", primary.Addr, replica.Addr), nil
}

// connectedReplicas is INFO replication's connected_slaves.
func connectedReplicas(ctx context.Context, client *redis.Client) (int, error) {
	info, err := client.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_slaves:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, nil
}
