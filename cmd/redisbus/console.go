package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/redisbus/watermill-redisbus/internal/redisurl"
)

// defaultRedisURL is used when neither --redis nor REDIS_URL is set, as
// redis-cli does.
const defaultRedisURL = "redis://127.0.0.1:6379/0"

// console holds what every command shares: the global flags, the
// connection and where output goes.
type console struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	redisURL string
	json     bool
	// announceDefault is set for the commands of announcing: they say on
	// stderr when they use the default Redis, which nobody chose.
	announceDefault bool

	client redis.UniversalClient // a *redis.ClusterClient on Redis Cluster
	addr   string                // host:port, for error messages (the URL may hold a password)
}

func newRootCommand(c *console) *cobra.Command {
	root := &cobra.Command{
		Use:   "redisbus",
		Short: "Inspect and repair redisbus streams, dead letters and Pub/Sub channels",
		Long: `redisbus is the operator's console for redisbus topics in Redis.

It connects to --redis, else REDIS_URL, else ` + defaultRedisURL + `.
Tables are for people; --json prints JSON for scripts.

Exit codes: 0 done, 1 failed, 2 bad command line, 3 Redis unreachable,
4 no such stream or group (or the key is not a stream), 130 interrupted.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&c.redisURL, "redis", "", "Redis URL (default $REDIS_URL, else "+defaultRedisURL+")")
	root.PersistentFlags().BoolVar(&c.json, "json", false, "print JSON instead of tables")
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if c.client != nil {
			_ = c.client.Close()
		}
	}
	root.AddCommand(
		newStreamsCommand(c),
		newStreamCommand(c),
		newDeadCommand(c),
		newReplayCommand(c),
		newPurgeCommand(c),
		newPendingCommand(c),
		newClaimCommand(c),
		newTailCommand(c),
		newUICommand(c),
	)
	return root
}

// connect opens the connection and checks that Redis answers, so that an
// outage is reported as such (exit 3) before any command starts.
func (c *console) connect(ctx context.Context) error {
	raw, source := c.redisURL, "--redis"
	if raw == "" {
		raw, source = os.Getenv("REDIS_URL"), "REDIS_URL"
	}
	if raw == "" {
		raw, source = defaultRedisURL, ""
	}
	opts, err := redisurl.ParseFrom(source, raw)
	if err != nil {
		return usagef("%v", err)
	}
	if source == "" && c.announceDefault {
		c.notef("redisbus: using Redis at %s (default; set REDIS_URL or --redis)", opts.Addr)
	}
	opts.DialTimeout = 3 * time.Second
	opts.MaxRetries = -1 // an operator wants the error now, not after retries
	opts.DialerRetries = 1
	redis.SetLogger(quietLogger{}) // its errors reach the user as ours
	c.addr = opts.Addr
	client := redis.NewClient(opts)
	c.client = client
	if err := client.Ping(ctx).Err(); err != nil {
		return c.connectError(err)
	}
	if !clusterEnabled(ctx, client) {
		return nil
	}
	_ = client.Close()
	c.client = redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:         []string{opts.Addr},
		Username:      opts.Username,
		Password:      opts.Password,
		TLSConfig:     opts.TLSConfig,
		DialTimeout:   opts.DialTimeout,
		MaxRetries:    opts.MaxRetries,
		DialerRetries: opts.DialerRetries,
	})
	if err := c.client.Ping(ctx).Err(); err != nil {
		return c.connectError(err)
	}
	return nil
}

// connectError is redisError for the first command: whatever fails there
// (a service that is not Redis on the port, a database the server does
// not have) means that this Redis cannot be used, exit 3.
func (c *console) connectError(err error) error {
	err = c.redisError(err)
	var exit *exitError
	if errors.As(err, &exit) && exit.code == exitFailure {
		return failf(exitUnreachable, "cannot use Redis at %s: %v", c.addr, exit.err)
	}
	return err
}

// clusterEnabled tells whether the server is a Redis Cluster node, whose
// keys are spread over the cluster's masters. A user whose ACL does not
// allow INFO is taken to be on a standalone server.
func clusterEnabled(ctx context.Context, client *redis.Client) bool {
	info, err := client.Info(ctx, "cluster").Result()
	return err == nil && strings.Contains(info, "cluster_enabled:1")
}

// redisError turns an error of a Redis call into an exit code and a
// message that says what to do.
func (c *console) redisError(err error) error {
	var exit *exitError
	switch {
	case errors.As(err, &exit):
		return err
	case errors.Is(err, context.Canceled):
		return &exitError{code: exitInterrupted, err: errors.New("interrupted")}
	case isNetworkError(err):
		return failf(exitUnreachable, "cannot reach Redis at %s: %v", c.addr, err)
	case strings.HasPrefix(err.Error(), "NOAUTH"), strings.HasPrefix(err.Error(), "WRONGPASS"):
		return failf(exitUnreachable, "Redis at %s refused the credentials: %v", c.addr, err)
	case strings.HasPrefix(err.Error(), "WRONGTYPE"):
		return failf(exitNotFound, "%v", err)
	}
	return failf(exitFailure, "%v", err)
}

func isNetworkError(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, redis.ErrClosed)
}

// requireStream checks that key is a stream, so that a typo or a key of
// another type gets a clear message (exit 4) instead of WRONGTYPE. When
// key does not exist it returns ifMissing: nil accepts a stream that does
// not exist yet, such as a dead-letter stream before the first dead
// letter.
func (c *console) requireStream(ctx context.Context, key string, ifMissing error) error {
	kind, err := c.client.Type(ctx, key).Result()
	if err != nil {
		return c.redisError(err)
	}
	switch kind {
	case "stream":
		return nil
	case "none":
		return ifMissing
	}
	return failf(exitNotFound, "%q is a %s, not a stream", key, kind)
}

// requireDeadLetters checks, as requireStream does, that dead is a
// stream. A dead-letter stream that does not exist is fine (no dead
// letters yet) when the topic's stream does: when neither exists, the
// topic is most likely misspelt.
func (c *console) requireDeadLetters(ctx context.Context, topic, dead string) error {
	errNone := errors.New("no dead-letter stream")
	err := c.requireStream(ctx, dead, errNone)
	if !errors.Is(err, errNone) {
		return err
	}
	return c.requireStream(ctx, topic, failf(exitNotFound, "no such stream: neither %q nor its dead-letter stream %q exists", topic, dead))
}

// noStream is the error of a command that needs stream to exist.
func noStream(stream string) error {
	return failf(exitNotFound, "no stream named %q", stream)
}

// groupError explains NOGROUP, which Redis also returns for a missing key.
func (c *console) groupError(err error, stream, group string) error {
	if err != nil && strings.HasPrefix(err.Error(), "NOGROUP") {
		return failf(exitNotFound, "stream %q has no consumer group %q", stream, group)
	}
	return c.redisError(err)
}

// printJSON writes v as indented JSON.
func (c *console) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// notef writes a remark for people to stderr, which keeps stdout clean
// for --json.
func (c *console) notef(format string, args ...any) {
	fmt.Fprintf(c.stderr, format+"\n", args...)
}

// announcing are the commands that change data, and ui, which offers to:
// run against a Redis nobody named, they say which one it is.
var announcing = map[string]bool{"replay": true, "purge": true, "claim": true, "ui": true}

// entryID matches a stream entry ID as commands take it: ms-seq or ms.
var entryID = regexp.MustCompile(`^[0-9]+(-[0-9]+)?$`)

// checkIDs refuses, as a usage error, arguments that are not entry IDs,
// which Redis would otherwise report in its own words (or take for an
// option of XCLAIM).
func checkIDs(ids []string) error {
	for _, id := range ids {
		if !entryID.MatchString(id) {
			return usagef("%q is not a stream entry ID (MILLISECONDS-SEQUENCE, such as 1718000000000-0)", id)
		}
	}
	return nil
}

// atLeastOne refuses a count flag below 1.
func atLeastOne(flag string, value int64) error {
	if value < 1 {
		return usagef("%s must be at least 1", flag)
	}
	return nil
}

// command wraps a command's work: check the command line (validate may
// be nil), connect, and turn whatever error fn returns into an exit code.
func (c *console) command(validate func(args []string) error, fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if validate != nil {
			if err := validate(args); err != nil {
				return err
			}
		}
		ctx := cmd.Context()
		c.announceDefault = announcing[cmd.Name()]
		if err := c.connect(ctx); err != nil {
			return err
		}
		if err := fn(ctx, args); err != nil {
			return c.redisError(err)
		}
		return nil
	}
}

// quietLogger keeps go-redis from logging to stderr what the console
// reports itself.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
