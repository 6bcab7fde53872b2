package redisbus

import "errors"

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
