package redisbus

import (
	"context"
	"sync"
)

// pendingCounter counts work in progress and lets a caller wait until there
// is none.
type pendingCounter struct {
	mu      sync.Mutex
	pending int
	idle    chan struct{} // closed while pending is 0; nil means closed
}

func (c *pendingCounter) add(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == 0 {
		c.idle = make(chan struct{})
	}
	c.pending += n
}

func (c *pendingCounter) done(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending -= n
	if c.pending == 0 {
		close(c.idle)
	}
}

// wait returns when nothing is pending, or with ctx's cause when ctx is done
// first. Work added while it waits may or may not be waited for.
func (c *pendingCounter) wait(ctx context.Context) error {
	c.mu.Lock()
	idle := c.idle
	c.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// count is how much is pending now.
func (c *pendingCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending
}
