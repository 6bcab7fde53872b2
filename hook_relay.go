package redisbus

import (
	"context"
	"runtime"
	"sync"
	"weak"

	"github.com/redis/go-redis/v9"
)

// The Streams subscriber runs its blocking reads, claims and takes on a
// client of its own made from the caller's options (see blockingClient).
// go-redis offers no way to copy a client's hooks, so instrumentation the
// caller added (redisotel, a logging hook) would not see those commands.
// The hook relay routes them through the caller's hooks:
//
//   - relayOut, the outermost hook of the derived client, hands each
//     command to the caller's client, marking its context with the rest of
//     the derived client's chain;
//   - relayIn, added once as the innermost hook of the caller's client,
//     finds that mark and runs the command on the derived client instead of
//     on the caller's pool.
//
// So the caller's hooks see each command once, and it still runs on the
// derived client's connections, without the caller's retries. Hooks the
// caller adds after the first subscriber was made are inner to relayIn and
// do not see the relayed commands.

// relayed carries the rest of the derived client's hook chain. The
// derived client sends single commands only, so pipelines are not relayed.
type relayed struct{ process redis.ProcessHook }

type relayedKey struct{}

// relayIn is the caller's client's innermost hook.
type relayIn struct{}

func (relayIn) DialHook(next redis.DialHook) redis.DialHook { return next }

func (relayIn) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if r, ok := ctx.Value(relayedKey{}).(*relayed); ok {
			return r.process(ctx, cmd)
		}
		return next(ctx, cmd)
	}
}

func (relayIn) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// relayOut is the derived client's outermost hook.
type relayOut struct{ caller redis.UniversalClient }

func (relayOut) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h relayOut) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.caller.Process(context.WithValue(ctx, relayedKey{}, &relayed{process: next}), cmd)
	}
}

func (relayOut) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// relayedClients remembers the callers' clients that have relayIn, so each
// gets it once however many subscribers are made on it (weakly: a client
// the application dropped is not kept alive).
var relayedClients sync.Map // weak.Pointer → struct{}

// relayHooks makes derived's commands pass through caller's hooks.
func relayHooks[C any, PC interface {
	*C
	redis.UniversalClient
}](caller PC, derived interface{ AddHook(redis.Hook) }) {
	key := weak.Make((*C)(caller))
	if _, loaded := relayedClients.LoadOrStore(key, struct{}{}); !loaded {
		caller.AddHook(relayIn{})
		runtime.AddCleanup((*C)(caller), func(key weak.Pointer[C]) { relayedClients.Delete(key) }, key)
	}
	derived.AddHook(relayOut{caller: caller})
}
