package dedup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"
)

// Repository is Watermill's middleware.ExpiringKeyRepository backed by
// Redis: the store that Watermill's middleware.Deduplicator needs to drop
// duplicates across processes. Each check is one round trip, SET key NX PX
// Window, atomic in Redis, so that of any number of processes checking a
// key at once exactly one sees it new.
//
// The Deduplicator marks a message when it checks it, before its handler
// runs: a handler that fails, or a process that dies, after the check
// leaves the mark, and the redelivery that at-least-once delivery brings is
// then dropped as a duplicate. The message is lost. Middleware marks a
// message only once it was handled, and is the one to use in front of a
// handler that can fail; Repository is for Watermill's Deduplicator as it
// is, and for drop-if-seen uses where losing a copy is fine.
type Repository struct {
	client redis.UniversalClient
	prefix string
	window time.Duration

	checks, duplicates, errors atomic.Uint64
}

var _ middleware.ExpiringKeyRepository = (*Repository)(nil)

// RepositoryStats are counters since the Repository was created.
type RepositoryStats struct {
	Checks     uint64 // IsDuplicate calls
	Duplicates uint64 // of which found the key marked
	Errors     uint64 // of which failed
}

// NewRepository returns a Repository. Config.Lease is not used.
func NewRepository(config Config) (*Repository, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	return &Repository{client: config.Client, prefix: config.Prefix, window: config.Window}, nil
}

// IsDuplicate marks key for the Window and reports whether it was marked
// already (true: a duplicate). It is one round trip; ctx bounds it.
//
// The mark carries a token of this call, and the command reads the value
// it found (SET … NX GET, Redis 7.0 or newer): when go-redis sends it again
// after a lost reply, the second attempt finds the first one's token and
// reports the key new, not a duplicate of itself. When the call fails
// anyway, it deletes its mark if it made one, so that the redelivery of the
// message is not dropped for a check that never answered; should that fail
// too, the mark stays for the Window.
func (r *Repository) IsDuplicate(ctx context.Context, key string) (bool, error) {
	r.checks.Add(1)
	k, value := r.prefix+bounded(key), done+newToken()
	found, err := setNXGet(ctx, r.client, k, value, r.window)
	switch {
	case err == nil:
		duplicate := found != "" && found != value
		if duplicate {
			r.duplicates.Add(1)
		}
		return duplicate, nil
	default:
		r.errors.Add(1)
		undo(r.client, k, value)
		return false, err
	}
}

// Stats returns the Repository's counters.
func (r *Repository) Stats() RepositoryStats {
	return RepositoryStats{Checks: r.checks.Load(), Duplicates: r.duplicates.Load(), Errors: r.errors.Load()}
}

// setNXGet sets k to value for ttl unless k exists, and returns what k
// held before ("" when nothing).
func setNXGet(ctx context.Context, client redis.UniversalClient, k, value string, ttl time.Duration) (string, error) {
	found, err := client.Do(ctx, "set", k, value, "nx", "get", "px", ttl.Milliseconds()).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return "", nil
	case err != nil && strings.Contains(err.Error(), "syntax error"):
		// Redis 6.2 takes GET but not with NX.
		return "", fmt.Errorf("%w (dedup needs Redis 7.0 or newer: SET with NX and GET)", err)
	}
	return found, err
}

// undoTimeout bounds a best-effort undo: the caller has its error already
// and should not wait long for a Redis that just failed it.
const undoTimeout = time.Second

// undo deletes k if it holds value: what a failed call may have written.
func undo(client redis.UniversalClient, k, value string) {
	ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
	defer cancel()
	_ = releaseScript.Run(ctx, client, []string{k}, value).Err()
}

// UUID is a Watermill middleware.MessageHasher that keys a message by its
// UUID, for a Deduplicator in front of one handler. (Watermill's own
// hashers read the payload, so two orders with the same content are one.)
func UUID(msg *message.Message) (string, error) {
	return msg.UUID, nil
}

// HandlerAndUUID is a Watermill middleware.MessageHasher that keys a
// message by the name of the Router handler it reached (from its context)
// and its UUID: one Deduplicator and Repository in front of several
// handlers then let each handler see every message once. It is the
// Middleware's default Key, and a Repository with the Middleware's Prefix
// shares its marks.
func HandlerAndUUID(msg *message.Message) (string, error) {
	return key("", "handler", message.HandlerNameFromCtx(msg.Context()), msg.UUID), nil
}
