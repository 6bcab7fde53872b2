package redisbus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrPublisherClosed is returned by Publish after Close.
var ErrPublisherClosed = errors.New("redisbus: publisher is closed")

// ErrSubscriberClosed is returned by Subscribe after Close.
var ErrSubscriberClosed = errors.New("redisbus: subscriber is closed")

var errNoMessage = errors.New("marshaler returned no message")

// Errors of the logs that report a loss or a conflict, so that a log line
// at error level says what went wrong instead of err=<nil>.
var (
	errClaimedElsewhere = errors.New("entries claimed by another consumer")
	errEntriesGone      = errors.New("pending entries no longer in the stream")
	errAcksUnsent       = errors.New("acks not sent within CloseTimeout")
	errNameTakenOver    = errors.New("consumer name leased by another subscriber")
	errInboxFull        = errors.New("inbox full")
)

// ConfigError reports an invalid configuration. Field names the offending
// field as Config.Field, e.g. "SubscriberConfig.InboxSize".
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string {
	return "redisbus: invalid " + e.Field + ": " + e.Problem
}

// ErrNotReplicated is what a StreamsPublisher's Publish returns, wrapped
// with the count, when StreamsPublisherConfig.WaitReplicas replicas did not
// confirm its entries in time. The entries are stored on the primary: a
// failover before the replicas catch up could lose them, and publishing
// them again could store them twice.
var ErrNotReplicated = errors.New("redisbus: stored, but not confirmed by enough replicas (WaitReplicas)")

func configError(field, problem string) error {
	return &ConfigError{Field: field, Problem: problem}
}

// permanent reports whether err is one that reconnecting cannot cure: Redis
// refused the credentials, the command or the database number, or the
// server's certificate is not trusted. Retrying those only delays the error
// the user must see.
func permanent(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return redis.IsAuthError(err) || redis.IsPermissionError(err) ||
		// SELECT of a database the server does not have (a REDIS_URL
		// ending in /99, say): Redis has no error code of its own for it.
		strings.Contains(err.Error(), "DB index is out of range") ||
		errors.As(err, &certErr) || errors.As(err, &unknownAuthority) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}
