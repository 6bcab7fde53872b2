// Command redisbus is the operator's console for redisbus: it lists the
// Streams topics with their consumer groups, backlogs and dead letters,
// replays or purges dead letters, shows and claims stuck pending entries,
// and tails a stream or a Pub/Sub channel, decoding messages as redisbus
// writes them. redisbus ui serves the same views as a web page.
//
//	go install github.com/redisbus/watermill-redisbus/cmd/redisbus@latest
//	export REDIS_URL=redis://127.0.0.1:6379/0
//	redisbus streams
//	redisbus dead orders
//	redisbus replay orders --all
//
// Output is a table for people and JSON with --json. The exit code says
// what went wrong: see the exit* constants.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes, so that scripts can tell a typo from an outage.
const (
	exitOK          = 0
	exitFailure     = 1   // the command ran and failed (Redis refused, some entries could not be handled)
	exitUsage       = 2   // bad command line
	exitUnreachable = 3   // no connection to Redis
	exitNotFound    = 4   // no such stream or group, or the key is not a stream
	exitInterrupted = 130 // stopped by Ctrl-C or SIGTERM before it finished
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := newRootCommand(&console{stdin: stdin, stdout: stdout, stderr: stderr})
	cmd.SetArgs(singleDash(args))
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var exit *exitError
	if !errors.As(err, &exit) {
		// Only the command line parser returns errors that are not ours.
		fmt.Fprintf(stderr, "redisbus: %v\nRun 'redisbus --help' for usage.\n", err)
		return exitUsage
	}
	if exit.err != nil {
		fmt.Fprintf(stderr, "redisbus: %v\n", exit.err)
	}
	return exit.code
}

// singleDashFlags are the long flags also accepted with a single dash:
// the flag parser knows only the double-dash form of long flags, and
// -redis or -addr is how Go programs usually spell them.
var singleDashFlags = []string{"redis", "addr", "metrics"}

// singleDash turns -redis (or another of singleDashFlags) into --redis.
func singleDash(args []string) []string {
	out := make([]string, len(args))
	for i, arg := range args {
		for _, name := range singleDashFlags {
			if arg == "-"+name || strings.HasPrefix(arg, "-"+name+"=") {
				arg = "-" + arg
			}
		}
		out[i] = arg
	}
	return out
}

// exitError is an error with the exit code it leads to. A nil err exits
// with code and says nothing more (the command already explained).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func failf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

func usagef(format string, args ...any) error {
	return failf(exitUsage, format, args...)
}
