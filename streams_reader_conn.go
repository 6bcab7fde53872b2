package redisbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// readerConn is the connection a consumer group topic's reader runs its
// commands on, when the subscriber made the client for them: one
// connection whose client ID is known, so that Close can end a blocking
// read with CLIENT UNBLOCK instead of closing the connection under it. A
// read cut off that way may already have moved entries to this consumer
// in Redis, entries the reader never sees: they would stay pending with a
// consumer that is gone, until another claims them after ClaimMinIdle,
// behind newer entries and with a delivery counted. Unblocked, the read
// returns what it got, and Close hands that back with the rest.
//
// Only the reader runs commands on it; Close unblocks it from another
// goroutine.
type readerConn struct {
	mu   sync.Mutex
	conn *redis.Conn   // nil until the first command, and after a failure
	node *redis.Client // the client conn came from: UNBLOCK goes through it
	id   int64         // conn's client ID; 0 when Redis would not tell it

	// busy is set while a command of the reader's is on conn: only then
	// is there a read to unblock.
	busy atomic.Bool
	// idRefused is set once Redis refused CLIENT ID (ACL rules without
	// it): it is not asked again for every new connection.
	idRefused atomic.Bool
	lastUsed  time.Time // reader only
}

// readerCmdable is what a reader runs its commands on: its connection,
// or a client.
type readerCmdable interface {
	redis.Cmdable
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// readerConnMaxIdle is how long the reader keeps a connection it has not
// used (its handlers were busy): Redis' timeout setting, or a proxy, may
// have closed it meanwhile.
const readerConnMaxIdle = 30 * time.Second

// run runs one of the reader's commands on its connection, opened first
// on the node of client (a Client or a ClusterClient, as the subscriber
// makes them) that serves key. The hooks of hooked see the connection's
// commands.
func (r *readerConn) run(ctx context.Context, client, hooked redis.UniversalClient, key string, command func(readerCmdable) error) error {
	conn, err := r.get(ctx, client, hooked, key)
	if err != nil {
		return err
	}
	r.busy.Store(true)
	err = command(conn)
	r.busy.Store(false)
	r.lastUsed = time.Now()
	switch {
	case err == nil, errors.Is(err, redis.Nil): // Nil: a read that timed out
		return err
	case redirected(err):
		// A cluster's slot is moving (ASK) or has moved (MOVED): the
		// command did not run. The cluster client follows the
		// redirection (with ASKING), and the next connection goes where
		// the slot map points then.
		if _, moved := redis.IsMovedError(err); moved {
			r.close()
		}
		return command(client)
	}
	r.close() // it may be broken, or on a node that no longer serves the stream
	return err
}

// get returns the reader's connection, opening one if it has none.
func (r *readerConn) get(ctx context.Context, client, hooked redis.UniversalClient, key string) (*redis.Conn, error) {
	r.mu.Lock()
	conn := r.conn
	r.mu.Unlock()
	if conn != nil && time.Since(r.lastUsed) < readerConnMaxIdle {
		return conn, nil
	}
	r.close()
	var node *redis.Client
	switch c := client.(type) {
	case *redis.Client:
		node = c
	case *redis.ClusterClient:
		var err error
		if node, err = c.MasterForKey(ctx, key); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("redisbus: a reader's connection cannot be pinned on a %T", client)
	}
	conn = node.Conn()
	if cluster, ok := hooked.(*redis.ClusterClient); ok {
		// A node's connection bypasses the cluster client's hooks. (A
		// Client's connection has its hooks already.)
		relayHooks(cluster, conn)
	}
	var id int64
	if !r.idRefused.Load() {
		var err error
		id, err = conn.ClientID(ctx).Result()
		switch {
		case err == nil:
		case isRedisError(err, "NOPERM"), isRedisError(err, "ERR unknown"):
			r.idRefused.Store(true)
			id = 0
		default:
			_ = conn.Close()
			return nil, err
		}
	}
	r.mu.Lock()
	r.conn, r.node, r.id = conn, node, id
	r.mu.Unlock()
	r.lastUsed = time.Now()
	return conn, nil
}

// close gives the connection back to its client's pool (go-redis discards
// it instead when a command found it broken).
func (r *readerConn) close() {
	r.mu.Lock()
	conn := r.conn
	r.conn, r.node, r.id = nil, nil, 0
	r.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// unblock ends a read that blocks on the connection now, as if it timed
// out, with whatever it has read, waiting for Redis until deadline; a
// command that does not block is left to finish. It fails with
// errCannotUnblock when it cannot tell Redis which connection to unblock.
func (r *readerConn) unblock(deadline time.Time) error {
	if !r.busy.Load() {
		return nil
	}
	r.mu.Lock()
	node, id := r.node, r.id
	r.mu.Unlock()
	switch {
	case node == nil:
		return nil
	case id == 0:
		return errCannotUnblock
	}
	// The context's deadline does not bound go-redis' reads and writes;
	// the client's timeouts do.
	err := node.WithTimeout(max(time.Until(deadline), time.Millisecond)).ClientUnblock(context.Background(), id).Err()
	if isRedisError(err, "") {
		return errCannotUnblock // refused: ACL rules without it
	}
	return err
}

// errCannotUnblock says a read cannot be unblocked: Redis refused CLIENT
// ID or CLIENT UNBLOCK (see docs/operating-redis.md).
var errCannotUnblock = errors.New("redisbus: cannot unblock the read")

// readerStopWait bounds how long Close waits for the readers to end their
// commands before it cuts them off; unblockRetry is how often it unblocks
// a reader again, as one may have begun another read meanwhile.
const (
	readerStopWait = 500 * time.Millisecond
	unblockRetry   = 20 * time.Millisecond
)

// stopReaders ends the reads of topics, whose readers see that Close has
// begun: it unblocks each until its reader has returned, for up to
// readerStopWait. Whatever still runs then (Redis did not answer in time,
// or refused to unblock) is for the caller to cut off.
func stopReaders(topics []*streamsTopic) {
	deadline := time.Now().Add(readerStopWait)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var stopped sync.WaitGroup
	for _, t := range topics {
		stopped.Go(func() {
			for t.readConn.unblock(deadline) == nil {
				select {
				case <-t.readerDone:
					return
				case <-ctx.Done():
					return
				case <-time.After(unblockRetry): // it may have begun another read
				}
			}
		})
	}
	stopped.Wait()
}
