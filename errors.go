package redisbus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/redis/go-redis/v9"
)

// ErrPublisherClosed is returned by Publish after Close.
var ErrPublisherClosed = errors.New("redisbus: publisher is closed")

// ErrSubscriberClosed is returned by Subscribe after Close.
var ErrSubscriberClosed = errors.New("redisbus: subscriber is closed")

var errNoMessage = errors.New("marshaler returned no message")

// ConfigError reports an invalid configuration. Field names the offending
// field as Config.Field, e.g. "SubscriberConfig.InboxSize".
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string {
	return "redisbus: invalid " + e.Field + ": " + e.Problem
}

func configError(field, problem string) error {
	return &ConfigError{Field: field, Problem: problem}
}

// permanent reports whether err is one that reconnecting cannot cure: Redis
// refused the credentials or the command, or the server's certificate is
// not trusted. Retrying those only delays the error the user must see.
func permanent(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return redis.IsAuthError(err) || redis.IsPermissionError(err) ||
		errors.As(err, &certErr) || errors.As(err, &unknownAuthority) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}
