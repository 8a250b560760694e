package rpc

import (
	"context"
	"sync"
	"time"
)

// callCtx is the context a handler gets: the server's context plus the
// call's deadline. Unlike context.WithDeadline it arms no timer until a
// handler actually asks for Done, which most one-shot handlers never do;
// that timer and its bookkeeping were a measurable share of a call.
type callCtx struct {
	context.Context
	deadline time.Time

	mu    sync.Mutex
	done  chan struct{}
	timer *time.Timer
	stop  func() bool
	err   error
}

func newCallCtx(parent context.Context, deadline time.Time) *callCtx {
	return &callCtx{Context: parent, deadline: deadline}
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *callCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
			return c.done
		}
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
		c.stop = context.AfterFunc(c.Context, func() { c.cancel(c.Context.Err()) })
	}
	return c.done
}

func (c *callCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}

func (c *callCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	if err == nil {
		err = context.Canceled
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
}

// release stops the timer and the parent watch once the call is over.
func (c *callCtx) release() {
	c.cancel(context.Canceled)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stop != nil {
		c.stop()
	}
}
