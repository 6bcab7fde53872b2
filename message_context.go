package redisbus

import (
	"context"
	"sync"
)

// messageContext is the context of a delivered message: its consumer's
// Subscribe context, done once the message is acked, nacked or taken back.
//
// context.WithCancel would do, but registers every message in its parent's
// child map and back out, a measurable share of delivering a message. The
// dispatcher cancels every message context itself when the consumer's
// context ends or the subscriber closes, so the registration buys nothing.
type messageContext struct {
	context.Context // the consumer's context: values and deadline

	mu   sync.Mutex
	done chan struct{} // made on first Done
	err  error
}

func newMessageContext(parent context.Context) *messageContext {
	return &messageContext{Context: parent}
}

func (c *messageContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *messageContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// cancel ends the context; later calls do nothing.
func (c *messageContext) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
}
