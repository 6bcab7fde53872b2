// Package slotmap keeps a Redis Cluster client's map of slots to nodes up
// to date when a node fails.
//
// go-redis reads the map anew by itself only after a MOVED or ASK reply,
// or every ClusterOptions.ClusterStateReloadInterval (60 s by default
// since v9.22). When a master dies, its replica takes over in about a
// second, yet the client keeps sending that master's slots to the dead
// address, and gets no MOVED from it, until the next periodic reload. The
// components call Refresh with every error they meet, so they follow a
// failover as soon as the cluster has made it.
package slotmap

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Refresh asks each cluster client among clients to read its slot map
// again when err says the node it used may no longer serve its slots (see
// Stale). go-redis coalesces such requests into at most one reload at a
// time, done in the background, so calling it on every error is cheap.
// Clients that are not cluster clients are left alone.
func Refresh(err error, clients ...redis.UniversalClient) {
	if !Stale(err) {
		return
	}
	for _, client := range clients {
		if cluster, ok := client.(*redis.ClusterClient); ok {
			cluster.ReloadState(context.Background())
		}
	}
}

// Stale reports whether err may come from a node that no longer serves
// the slot: it could not be reached or stopped answering, or it answered
// that the cluster is reconfiguring (CLUSTERDOWN, TRYAGAIN, MASTERDOWN,
// READONLY, LOADING, MOVED, ASK). Other replies of Redis, the caller's
// cancellation and a closed client are not.
func Stale(err error) bool {
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, redis.ErrClosed), errors.Is(err, redis.Nil):
		return false
	}
	var reply redis.Error
	if !errors.As(err, &reply) {
		return true // no reply: the network, a timeout, a refused connection
	}
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsMasterDownError(err) || redis.IsReadOnlyError(err) || redis.IsLoadingError(err)
}
