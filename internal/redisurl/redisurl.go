// Package redisurl parses the REDIS_URL of the project's programs and
// tests without ever putting its credentials in an error.
package redisurl

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Parse is redis.ParseURL whose error never contains the URL's user name
// or password. url.Parse quotes the whole URL in its errors, so a typo in
// a port would otherwise print the password.
func Parse(raw string) (*redis.Options, error) {
	return ParseFrom("REDIS_URL", raw)
}

// ParseFrom is Parse for a URL that came from source (a flag, say), which
// its error names so that the user knows which setting to fix.
func ParseFrom(source, raw string) (*redis.Options, error) {
	opt, err := redis.ParseURL(raw)
	if err == nil {
		return opt, nil
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err // the reason, without the quoted URL
	}
	msg := err.Error()
	for _, secret := range append(querySecrets(raw), userinfo(raw)) {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "xxxxx")
		}
	}
	return nil, fmt.Errorf("%s %s is not a valid Redis URL: %s", source, Redact(raw), msg)
}

// Redact returns raw with the user name and password replaced by xxxxx,
// wherever the URL keeps them: before the host, or as query parameters
// (?password=, which other Redis clients accept).
func Redact(raw string) string {
	if info := userinfo(raw); info != "" {
		raw = strings.Replace(raw, info+"@", "xxxxx@", 1)
	}
	for _, secret := range querySecrets(raw) {
		raw = strings.Replace(raw, "="+secret, "=xxxxx", 1)
	}
	return raw
}

// secretParams are query parameters that carry credentials.
var secretParams = []string{"password", "pass", "pwd", "username", "user", "auth", "token", "secret"}

// querySecrets returns the values of raw's credential query parameters,
// found without parsing, since raw may not parse.
func querySecrets(raw string) []string {
	_, query, ok := strings.Cut(raw, "?")
	if !ok {
		return nil
	}
	query, _, _ = strings.Cut(query, "#")
	var secrets []string
	for _, param := range strings.Split(query, "&") {
		name, value, ok := strings.Cut(param, "=")
		if ok && value != "" && slices.Contains(secretParams, strings.ToLower(name)) {
			secrets = append(secrets, value)
		}
	}
	return secrets
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
