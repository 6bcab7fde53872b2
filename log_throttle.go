package redisbus

import (
	"sync"
	"time"
)

// logInterval is how often a log that a failure repeats on every attempt
// (a trim, a renewal) is let through.
const logInterval = 10 * time.Second

// logThrottle lets a repeated log through at most once per logInterval.
// Its zero value lets the first one through.
type logThrottle struct {
	mu   sync.Mutex
	last time.Time
}

// allow reports whether to log now, and if so starts a new interval.
func (l *logThrottle) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && time.Since(l.last) < logInterval {
		return false
	}
	l.last = time.Now()
	return true
}
