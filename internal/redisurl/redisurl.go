// Package redisurl parses the REDIS_URL of the project's programs and
// tests without ever putting its credentials in an error.
package redisurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Parse is redis.ParseURL whose error never contains the URL's user name
// or password. url.Parse quotes the whole URL in its errors, so a typo in
// a port would otherwise print the password.
func Parse(raw string) (*redis.Options, error) {
	opt, err := redis.ParseURL(raw)
	if err == nil {
		return opt, nil
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err // the reason, without the quoted URL
	}
	msg := err.Error()
	if info := userinfo(raw); info != "" {
		msg = strings.ReplaceAll(msg, info, "xxxxx")
	}
	return nil, fmt.Errorf("REDIS_URL %s is not a valid Redis URL: %s", Redact(raw), msg)
}

// Redact returns raw with the user name and password replaced by xxxxx.
func Redact(raw string) string {
	if info := userinfo(raw); info != "" {
		return strings.Replace(raw, info+"@", "xxxxx@", 1)
	}
	return raw
}

// userinfo is what stands between "://" and the last "@" before the path:
// where a URL keeps its credentials, found without parsing, since raw may
// not parse.
func userinfo(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	if at <= 0 {
		return ""
	}
	return rest[:at]
}
