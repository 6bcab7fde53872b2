package dedup

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Config configures a Repository, a Middleware or a Publisher. The zero
// value of every field but Client means its default.
type Config struct {
	// Client holds the marks. Required; never closed. On Redis Cluster
	// each mark is one key, in the slot its name hashes to, unless Prefix
	// carries a hash tag (see Middleware.Commit).
	Client redis.UniversalClient

	// Prefix starts every key. Zero means "redisbus:dedup:". Components
	// that must not see each other's marks need prefixes of their own;
	// the Middleware and the Publisher already put the handler's name or
	// the topic into their keys.
	Prefix string

	// Window is how long a message is remembered once handled or
	// published: a copy arriving later is handled, or published, again.
	// Zero means 10 minutes, which covers what redisbus Streams redeliver
	// with their defaults (a crashed consumer's messages after
	// ClaimMinIdle, 30 s; ten deliveries with nack backoff, about a
	// minute) with room to spare. Redis keeps a key of about 140 bytes per
	// message for as long: at 1,000 messages a second, 10 minutes are
	// 600,000 keys, some 85 MB. At least a millisecond.
	Window time.Duration

	// Key names a message for the Middleware. Nil means HandlerAndUUID:
	// the handler's name and the message's UUID, so that handlers sharing
	// a Redis each handle every message once. (A Repository gets its keys
	// from Watermill's Deduplicator; the Publisher keys a message by its
	// topic and UUID, which is what a retried Publish repeats.)
	Key func(*message.Message) (string, error)

	// Lease bounds a claim: how long a message being handled (by the
	// Middleware) or published (by the Publisher) keeps other copies out
	// after its process died. A live process renews its claims every
	// third of Lease, however long its handler takes. Zero means 10
	// seconds. Keep it below the redelivery delay of a crashed consumer
	// (redisbus' ClaimMinIdle, 30 s), so that the claim is gone when the
	// message comes back. At least a millisecond.
	Lease time.Duration
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "redisbus:dedup:"
	}
	if c.Window == 0 {
		c.Window = 10 * time.Minute
	}
	if c.Lease == 0 {
		c.Lease = 10 * time.Second
	}
}

// Validate reports the first invalid field, if any, as a
// *redisbus.ConfigError.
func (c Config) Validate() error {
	switch {
	case c.Client == nil:
		return configError("Client", "is required")
	case c.Window < 0:
		return configError("Window", "must not be negative")
	case c.Window > 0 && c.Window < time.Millisecond:
		return configError("Window", "must be at least 1ms (Redis expires keys in milliseconds)")
	case c.Lease < 0:
		return configError("Lease", "must not be negative")
	case c.Lease > 0 && c.Lease < time.Millisecond:
		return configError("Lease", "must be at least 1ms (Redis expires keys in milliseconds)")
	}
	return nil
}

func configError(field, problem string) error {
	return &redisbus.ConfigError{Field: "dedup.Config." + field, Problem: problem}
}

// maxKeyPart is the longest key body (after the prefix: a handler's name
// and a message's UUID, say) that a key holds as it is. A longer one, or
// one with a brace, is hashed: a hostile message cannot make keys big, nor pick their Redis
// Cluster slot with a hash tag of its own.
const maxKeyPart = 128

// key returns prefix followed by the parts, each preceded by its length,
// so that ("a:b", "c") and ("a", "b:c") differ; bounded.
func key(prefix string, parts ...string) string {
	var b strings.Builder
	for i, part := range parts {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(len(part)))
		b.WriteByte(':')
		b.WriteString(part)
	}
	return prefix + bounded(b.String())
}

// bounded returns s, or a hash of it when it is longer than maxKeyPart or
// has a brace. It returns its own results unchanged.
func bounded(s string) string {
	if len(s) <= maxKeyPart && !strings.ContainsAny(s, "{}") {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// Values of the keys. A key holding done or "d" and a token is a message
// handled or published; one holding a claim ("c" and a token) is one in
// progress. Each claim, each Middleware mark (the claim's token) and each
// Repository mark carries a token of its own, so that a command go-redis
// sends again after a lost reply recognises what its first attempt wrote
// (see the SET … GET commands).
const done = "d"

var (
	tokenPrefix = func() string {
		var b [8]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}()
	tokenCount atomic.Uint64
)

// newToken returns a string no other call, in this process or another,
// returns.
func newToken() string {
	return tokenPrefix + strconv.FormatUint(tokenCount.Add(1), 36)
}

func claimValue(token string) string { return "c" + token }

func isDone(value string) bool { return strings.HasPrefix(value, done) }
