// Package sendonce sends Redis commands that must not run twice.
//
// go-redis sends a command again after an error that leaves its fate
// unknown: a read timeout or a dropped connection after the command was
// written. For PUBLISH, XADD or a routing script, Redis may have run it
// already, so a second send delivers or stores the message twice. The
// commands here tell go-redis not to (go-redis honours Cmder.NoRetry for
// single commands, pipelines and clusters), and Retry sends them again only
// when the error proves that Redis never ran them.
package sendonce

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// IntCmd is a *redis.IntCmd that go-redis sends at most once.
type IntCmd struct{ *redis.IntCmd }

// NoRetry tells go-redis not to send the command again.
func (IntCmd) NoRetry() bool { return true }

// StringCmd is a *redis.StringCmd that go-redis sends at most once.
type StringCmd struct{ *redis.StringCmd }

// NoRetry tells go-redis not to send the command again.
func (StringCmd) NoRetry() bool { return true }

// Cmd is a *redis.Cmd that go-redis sends at most once.
type Cmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to send the command again.
func (Cmd) NoRetry() bool { return true }

// NotExecuted reports whether err proves that Redis did not run the
// command: no connection could be had, or Redis refused it before running
// it (loading, a replica, a cluster that is down or resharding). Any other
// error, a timeout above all, leaves it unknown.
func NotExecuted(err error) bool {
	if err == nil {
		return false
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	return errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) ||
		redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsMasterDownError(err)
}

// Policy is how often and how soon a command that was not executed is sent
// again: the client's own MaxRetries and retry backoff, which go-redis
// would have applied to every error.
type Policy struct {
	MaxRetries             int
	MinBackoff, MaxBackoff time.Duration
}

// PolicyOf reads the retry settings of client, with go-redis' defaults for
// the kinds of client whose options it cannot see.
func PolicyOf(client redis.UniversalClient) Policy {
	p := Policy{MaxRetries: 3, MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Second} // go-redis v9.23's defaults
	switch c := client.(type) {
	case *redis.Client:
		o := c.Options()
		p = Policy{o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff}
	case *redis.ClusterClient:
		o := c.Options()
		p = Policy{o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff}
	case *redis.Ring:
		o := c.Options()
		p = Policy{o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff}
	}
	// go-redis' options use -1 for "none" once normalised.
	p.MaxRetries = max(p.MaxRetries, 0)
	if p.MinBackoff <= 0 {
		p.MinBackoff = 0
	}
	if p.MaxBackoff < p.MinBackoff {
		p.MaxBackoff = p.MinBackoff
	}
	return p
}

// Retry runs send, and again while it fails with an error that proves
// nothing was executed, up to p.MaxRetries more times with exponential
// backoff. It stops early when ctx is done, returning send's last error.
func (p Policy) Retry(ctx context.Context, send func() error) error {
	err := send()
	for attempt := 0; attempt < p.MaxRetries && NotExecuted(err); attempt++ {
		if !sleep(ctx, p.backoff(attempt)) {
			return err
		}
		err = send()
	}
	return err
}

func (p Policy) backoff(attempt int) time.Duration {
	d := p.MinBackoff << min(attempt, 16)
	if d > p.MaxBackoff || d < 0 {
		d = p.MaxBackoff
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Script is a Lua script whose runs go-redis sends at most once.
type Script struct {
	src  string
	hash string
}

// NewScript returns a Script of src.
func NewScript(src string) Script {
	return Script{src: src, hash: redis.NewScript(src).Hash()}
}

// Run runs the script with EVALSHA, or EVAL when Redis does not have it;
// p sends it again only when it was not executed.
func (s Script) Run(ctx context.Context, p Policy, client redis.UniversalClient, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	_ = p.Retry(ctx, func() error {
		cmd = s.eval(ctx, client, "evalsha", s.hash, keys, args)
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmd = s.eval(ctx, client, "eval", s.src, keys, args)
		}
		return cmd.Err()
	})
	return cmd
}

func (Script) eval(ctx context.Context, client redis.UniversalClient, name, script string, keys []string, args []any) *redis.Cmd {
	all := make([]any, 0, 3+len(keys)+len(args))
	all = append(all, name, script, len(keys))
	for _, k := range keys {
		all = append(all, k)
	}
	all = append(all, args...)
	cmd := redis.NewCmd(ctx, all...)
	_ = client.Process(ctx, Cmd{cmd})
	return cmd
}
