package dedup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/sendonce"
)

// ErrInProgress is what a handler behind Middleware returns (wrapped, with
// the message's UUID) for a copy of a message that another delivery is
// handling right now: the Router nacks it, and the subscriber delivers it
// again after its backoff, by when the other delivery has marked it handled
// (this copy is then dropped) or has failed (this copy is then handled).
// The Publisher returns it for a message that another Publish is
// publishing.
var ErrInProgress = errors.New("dedup: another delivery of the message is in progress")

// ErrClaimLost is what Commit returns when the message's claim is no longer
// this delivery's: it lapsed (the process was paused for longer than Lease)
// and another delivery claimed the message, or handled it. Nothing of the
// transaction ran; return the error, and the message comes again.
var ErrClaimLost = errors.New("dedup: the message's claim lapsed and another delivery took it")

// errNotClaimed is what Commit returns for a message the Middleware is not
// handling.
var errNotClaimed = errors.New("dedup: Commit called for a message outside its Middleware's handler")

// errCommitted is what a second Commit of one delivery returns: the first
// marked the message handled, and another transaction would be a second
// side effect. Queue every command in one Commit.
var errCommitted = errors.New("dedup: Commit called twice for one delivery of a message; queue every command in one Commit")

// Middleware is a Watermill handler middleware that drops the copies of a
// message it has already handled, across any number of processes, and marks
// a message handled only once it was: at-least-once delivery stays at least
// once, and its duplicates are dropped.
//
// For each message it claims the message's key (SET NX, for Lease, renewed
// while the handler runs) and runs the handler; when the message is acked
// (the handler succeeded and the Router published what it returned) it
// marks the key handled for Window; when the handler fails or the message
// is nacked it deletes the claim, so that the redelivery runs the handler
// again. A copy that finds the key handled is dropped (acked, not handled);
// one that finds it claimed is nacked with ErrInProgress and comes back
// later. A process that dies with a claim holds the message's copies off
// for Lease at most.
//
// Watermill's Deduplicator, with Repository, marks a message before its
// handler runs instead: one redelivered because its handler failed, or its
// process died, is dropped and lost. What this order cannot close is a
// crash after the handler's side effect and before the mark: the message
// is then handled twice (never lost). For side effects in Redis, Commit
// closes it: the side effect and the mark are one transaction, and each
// message's side effect happens exactly once. For side effects elsewhere,
// make them idempotent by the message's UUID if twice in a crash is too
// often.
//
// Two round trips per message (the claim, and the mark once acked), and a
// renewal every Lease/3 for a handler that runs longer than that.
type Middleware struct {
	client       redis.UniversalClient
	prefix       string
	window       time.Duration
	lease        time.Duration
	messageKey   func(*message.Message) (string, error)
	logger       watermill.LoggerAdapter
	finishWithin time.Duration

	mu     sync.Mutex
	claims map[*message.Message]*claim

	handled, marked, committed, duplicates, inProgress, released, claimsLost, errors atomic.Uint64
}

// claim is a delivery's hold on its message's key.
type claim struct {
	key       string
	value     string        // the claim: "c" and the token
	mark      string        // the mark once handled: "d" and the same token
	failed    chan struct{} // closed once the handler failed and the claim was released
	committed atomic.Bool   // Commit marked the key: nothing to do at the ack
	finish    sync.Once     // the claim ends once: marked, or released
	ending    atomic.Bool   // set before the claim is released: a renewal that finds it gone then lost nothing
	// turn keeps a renewal out of a Commit's transaction: its PEXPIRE of
	// the WATCHed key would fail the transaction as if the claim were lost.
	turn sync.Mutex
	lost atomic.Bool // counted in ClaimsLost: once per claim
}

// MiddlewareStats are counters since the Middleware was created.
type MiddlewareStats struct {
	Handled    uint64 // messages whose handler ran
	Marked     uint64 // of which marked handled once acked
	Committed  uint64 // of which marked handled by Commit
	Duplicates uint64 // copies dropped: the message was handled within the Window
	InProgress uint64 // copies nacked with ErrInProgress: another delivery was handling the message
	Released   uint64 // claims deleted because the handler failed or the message was nacked (not one another delivery holds by then)
	// ClaimsLost counts claims that lapsed while their handler ran (a
	// paused process, a Lease shorter than a renewal takes): another copy
	// may have been handled meanwhile. Raise Lease if it grows.
	ClaimsLost uint64
	// Errors counts claims, renewals, marks and releases that Redis failed.
	// A failed claim fails the handler (the message comes again); a
	// failed mark or release leaves the claim to lapse after Lease.
	Errors uint64
}

// finishTimeout bounds the mark or release after a message was acked or
// nacked: its context is done by then.
const finishTimeout = 5 * time.Second

// NewMiddleware returns a Middleware. A nil logger means no logging.
func NewMiddleware(config Config, logger watermill.LoggerAdapter) (*Middleware, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if config.Key == nil {
		config.Key = HandlerAndUUID
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Middleware{
		client: config.Client, prefix: config.Prefix, window: config.Window, lease: config.Lease,
		messageKey: config.Key, logger: logger, finishWithin: finishTimeout,
		claims: map[*message.Message]*claim{},
	}, nil
}

// Middleware wraps h; it is a message.HandlerMiddleware, for
// Router.AddMiddleware or Handler.AddMiddleware. The message must be
// acked or nacked once h returns, as a Router does: the mark waits for it.
func (m *Middleware) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		name, err := m.messageKey(msg)
		if err != nil {
			return nil, fmt.Errorf("dedup: key of message %s: %w", msg.UUID, err)
		}
		token := newToken()
		c := &claim{key: m.prefix + bounded(name), value: claimValue(token), mark: done + token, failed: make(chan struct{})}
		found, err := setNXGet(msg.Context(), m.client, c.key, c.value, m.lease)
		switch {
		case err != nil:
			m.errors.Add(1)
			undo(m.client, c.key, c.value)
			return nil, fmt.Errorf("dedup: claim message %s: %w", msg.UUID, err)
		case isDone(found):
			m.duplicates.Add(1)
			return nil, nil
		case found != "" && found != c.value:
			m.inProgress.Add(1)
			return nil, fmt.Errorf("%w: message %s", ErrInProgress, msg.UUID)
		}
		m.handled.Add(1)
		m.mu.Lock()
		m.claims[msg] = c
		m.mu.Unlock()
		go m.hold(msg, c)

		ok := false
		defer func() {
			if !ok { // an error, or a panic on its way up
				// Released before the error reaches the Router, or a
				// retrying middleware around this one: the next attempt
				// finds the key free.
				c.finish.Do(func() { m.release(c) })
				close(c.failed)
			}
		}()
		produced, err := h(msg)
		ok = err == nil
		return produced, err
	}
}

// hold renews the claim until the message is acked (mark it handled),
// nacked (release it), or its handler failed (released by then).
func (m *Middleware) hold(msg *message.Message, c *claim) {
	defer func() {
		m.mu.Lock()
		if m.claims[msg] == c { // not a later delivery's claim of the same message
			delete(m.claims, msg)
		}
		m.mu.Unlock()
	}()
	renew := time.NewTicker(m.lease / 3)
	defer renew.Stop()
	for {
		select {
		case <-renew.C:
			m.renew(c)
		case <-msg.Acked():
			c.finish.Do(func() {
				if !c.committed.Load() {
					m.markDone(c)
				}
			})
			return
		case <-msg.Nacked():
			c.finish.Do(func() { m.release(c) })
			return
		case <-c.failed: // released already
			return
		}
	}
}

func (m *Middleware) renew(c *claim) {
	c.turn.Lock()
	defer c.turn.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), m.lease/3)
	defer cancel()
	held, err := renewScript.Run(ctx, m.client, []string{c.key}, c.value, m.lease.Milliseconds()).Int()
	switch {
	case err != nil:
		m.errors.Add(1)
		m.logger.Error("Cannot renew a message's claim", err, watermill.LogFields{"key": c.key})
	case held == 0 && !c.committed.Load() && !c.ending.Load() && !c.lost.Swap(true):
		m.claimsLost.Add(1)
		m.logger.Error("A message's claim lapsed while its handler ran; another delivery may handle it too", ErrClaimLost, watermill.LogFields{"key": c.key})
	}
}

// markDone marks the message handled for the Window. It overwrites
// whatever is there: should the claim have lapsed and another delivery
// claimed the message, that one is handling it too, and the mark keeps a
// third copy out. The mark carries the claim's token: a SET go-redis sends
// again after a lost reply finds its first attempt's mark, which is not a
// lost claim.
func (m *Middleware) markDone(c *claim) {
	ctx, cancel := context.WithTimeout(context.Background(), m.finishWithin)
	defer cancel()
	found, err := m.client.Do(ctx, "set", c.key, c.mark, "get", "px", m.window.Milliseconds()).Text()
	switch {
	case err != nil && !errors.Is(err, redis.Nil):
		m.errors.Add(1)
		m.logger.Error("Cannot mark a message handled; its copies are kept out only until its claim lapses", err, watermill.LogFields{"key": c.key})
		return
	case found != c.value && found != c.mark && !c.lost.Swap(true):
		m.claimsLost.Add(1) // lapsed, or taken by another delivery, or handled by it
	}
	m.marked.Add(1)
}

// release deletes the claim, if it is still this delivery's. A renewal
// may run meanwhile (the handler failed on another goroutine): ending
// tells it the claim it finds gone was released, not lost.
func (m *Middleware) release(c *claim) {
	c.ending.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), m.finishWithin)
	defer cancel()
	deleted, err := releaseScript.Run(ctx, m.client, []string{c.key}, c.value).Int()
	switch {
	case err != nil:
		m.errors.Add(1)
		m.logger.Error("Cannot release a message's claim; its redelivery waits until the claim lapses", err, watermill.LogFields{"key": c.key})
	case deleted == 1:
		m.released.Add(1)
	}
}

// Commit runs fn's commands and the mark that msg was handled in one
// MULTI/EXEC transaction, from a handler behind the Middleware: the side
// effect and the mark happen together or not at all, so a crash at any
// point leaves either both (the redelivery is dropped) or neither (the
// redelivery runs the handler). Each message's side effect then happens
// exactly once, even across SIGKILLs.
//
// Redis does not roll back a transaction whose commands fail one by one
// (WRONGTYPE, a value that is not a number): when one does, Commit takes
// the mark back and returns the error, so that the message comes again,
// and the commands that did apply may apply twice. Queue commands that
// cannot fail that way, or check the keys first.
//
// The transaction runs only if the message's claim is still this
// delivery's (WATCH on its key); otherwise nothing runs and Commit returns
// ErrClaimLost. Return the error Commit returns: a failed Commit must make
// the message come again. Three round trips: WATCH, the check, MULTI/EXEC;
// the claim's renewals wait meanwhile (one would fail the transaction).
// Once per delivery: queue every command in fn, a second Commit after one
// that succeeded returns an error.
//
// On Redis Cluster the transaction's keys must share a slot: give Prefix
// the hash tag of the keys fn writes ("{shop}:dedup:" with "{shop}:…").
//
// The mark is made here, not when the message is acked: what the handler
// returns, which the Router publishes after it, is not part of the
// transaction, and the redelivery of a message whose publish failed is
// dropped. Publish such messages before Commit (with the Publisher, their
// retries are stored once).
func (m *Middleware) Commit(ctx context.Context, msg *message.Message, fn func(pipe redis.Pipeliner) error) error {
	m.mu.Lock()
	c := m.claims[msg]
	m.mu.Unlock()
	if c == nil {
		return errNotClaimed
	}
	c.turn.Lock()
	defer c.turn.Unlock()
	if c.committed.Load() {
		return fmt.Errorf("%w: message %s", errCommitted, msg.UUID)
	}
	err := m.client.Watch(ctx, func(tx *redis.Tx) error {
		found, err := tx.Get(ctx, c.key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if found != "" && found != c.value {
			return ErrClaimLost
		}
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			if err := fn(pipe); err != nil {
				return err
			}
			// Sent once: go-redis must not send the transaction again after
			// a lost reply, on a connection that no longer WATCHes.
			return pipe.Process(ctx, sendonce.Cmd{Cmd: redis.NewCmd(ctx, "set", c.key, c.mark, "px", m.window.Milliseconds())})
		})
		return err
	}, c.key)
	var replyErr redis.Error
	switch {
	case errors.Is(err, redis.TxFailedErr), errors.Is(err, ErrClaimLost):
		if !c.lost.Swap(true) {
			m.claimsLost.Add(1)
		}
		return fmt.Errorf("%w: message %s", ErrClaimLost, msg.UUID)
	case errors.As(err, &replyErr):
		// EXEC ran, and a command in it failed (a key of another type, a
		// value that is not a number): Redis does not roll back the others,
		// the mark among them. Take the mark back, so that the message
		// comes again; the commands that did apply may apply twice.
		if delErr := m.client.Del(ctx, c.key).Err(); delErr != nil {
			m.errors.Add(1)
			m.logger.Error("Cannot take back the mark of a failed Commit; its redelivery will be dropped", delErr, watermill.LogFields{"key": c.key})
		}
		return fmt.Errorf("dedup: commit message %s: a command failed in the transaction, which Redis does not roll back: %w", msg.UUID, err)
	case err != nil:
		return fmt.Errorf("dedup: commit message %s: %w", msg.UUID, err)
	}
	c.committed.Store(true)
	m.committed.Add(1)
	return nil
}

// Stats returns the Middleware's counters.
func (m *Middleware) Stats() MiddlewareStats {
	return MiddlewareStats{
		Handled: m.handled.Load(), Marked: m.marked.Load(), Committed: m.committed.Load(),
		Duplicates: m.duplicates.Load(), InProgress: m.inProgress.Load(),
		Released: m.released.Load(), ClaimsLost: m.claimsLost.Load(), Errors: m.errors.Load(),
	}
}
