package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// DefaultMaxReply is the default limit on a reply's payload frame.
const DefaultMaxReply = 1 << 20

// Client makes one-shot calls to one socket. It is safe for concurrent use:
// every call is its own connection.
type Client struct {
	Path     string        // socket path
	Hello    Hello         // our lines
	Expect   Hello         // the server's lines we require
	MaxReply int           // payload limit, default DefaultMaxReply
	MaxFDs   int           // fds accepted on a reply, default 1
	Timeout  time.Duration // whole call, default 5 s; ctx may shorten it
}

var clientBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Call sends req (msgpack-encoded) with fds and decodes the payload into
// resp. It returns the fds that came with the reply; the caller owns them.
// Errors: ErrHandshake, ErrBusy, ErrTimeout, ErrTruncated, ErrFrameTooLarge,
// or a *RemoteError carrying the server's error frame.
func (cl *Client) Call(ctx context.Context, req any, fds []*os.File, resp any) ([]*os.File, error) {
	bp := clientBufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 {
			clientBufPool.Put(bp)
		}
	}()
	aw := getAppendWriter((*bp)[:0])
	err := aw.encode(req)
	body := aw.b
	*bp = aw.b[:0]
	putAppendWriter(aw)
	if err != nil {
		return nil, fmt.Errorf("rpc: encode %T: %w", req, err)
	}
	var rfds []*os.File
	err = cl.call(ctx, body, fds, func(payload []byte, got []*os.File) error {
		if resp != nil {
			if err := checkMsgpack(payload); err != nil {
				return fmt.Errorf("rpc: decode reply into %T: %w", resp, err)
			}
			if err := msgpack.Unmarshal(payload, resp); err != nil {
				return fmt.Errorf("rpc: decode reply into %T: %w", resp, err)
			}
		}
		rfds = got
		return nil
	})
	return rfds, err
}

// CallRaw is Call with the request and reply frames as raw bytes.
func (cl *Client) CallRaw(ctx context.Context, body []byte, fds []*os.File) ([]byte, []*os.File, error) {
	var payload []byte
	var rfds []*os.File
	err := cl.call(ctx, body, fds, func(p []byte, got []*os.File) error {
		payload = append([]byte(nil), p...)
		rfds = got
		return nil
	})
	return payload, rfds, err
}

// call does the exchange and hands the payload (valid only during done)
// and the received fds to done; if done fails the fds are closed.
func (cl *Client) call(ctx context.Context, body []byte, fds []*os.File, done func([]byte, []*os.File) error) error {
	if len(body) > 1<<31 {
		return ErrFrameTooLarge
	}
	timeout := cl.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rpc: call %s: %w", cl.Path, err)
	}
	// DialUnix rather than a context dial: connect(2) on a unix socket does
	// not block on the network, and the context dial's watcher goroutine
	// costs more than the rest of the call's bookkeeping together.
	nc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: cl.Path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("rpc: dial %s: %w", cl.Path, err)
	}
	c := nc
	defer c.Close()
	c.SetDeadline(deadline)
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}

	// Pipeline: both lines and the request in one write.
	bp := clientBufPool.Get().(*[]byte)
	out := cl.Hello.appendLines((*bp)[:0])
	out = appendFrame(out, body)
	werr := writeWithFDs(c, out, fds)
	*bp = out[:0]
	if cap(out) <= 64<<10 {
		clientBufPool.Put(bp)
	}
	if werr != nil && !isReset(werr) {
		return fmt.Errorf("rpc: call %s: write: %w", cl.Path, timeoutErr(werr))
	}
	// A server that refused us may have closed before reading: carry on and
	// read what it said, if anything.

	maxReply := cl.MaxReply
	if maxReply <= 0 {
		maxReply = DefaultMaxReply
	}
	maxFDs := cl.MaxFDs
	if maxFDs == 0 {
		maxFDs = 1
	}
	r := readerPool.Get().(*msgReader)
	if rerr := r.reset(c, false); rerr != nil {
		readerPool.Put(r)
		return fmt.Errorf("rpc: call %s: %w", cl.Path, rerr)
	}
	defer func() {
		r.release()
		if cap(r.buf) <= 4096 {
			readerPool.Put(r)
		}
	}()
	fail := func(err error) error {
		return fmt.Errorf("rpc: call %s: %w", cl.Path, err)
	}
	limit := MaxIntentLine + BuildIDLine + 4 + 4096 + 4 + maxReply
	more := func() error {
		err := r.fill(limit)
		if errors.Is(err, io.EOF) {
			return ErrTruncated
		}
		return timeoutErr(err)
	}

	// The server's lines, checked before anything after them is trusted.
	var used int
	for {
		if bytes.HasPrefix(r.buf[:r.n], []byte(busyLine+"\n")) {
			return fail(ErrBusy)
		}
		intent, id, n, need, err := parseHello(r.buf[:r.n])
		if err != nil {
			return fail(fmt.Errorf("%w: %v", ErrHandshake, err))
		}
		if !need {
			if string(intent) != cl.Expect.Intent || string(id) != cl.Expect.BuildID {
				return fail(fmt.Errorf("%w: server said %q %s, want %q %s", ErrHandshake,
					intent, id, cl.Expect.Intent, cl.Expect.BuildID))
			}
			used = n
			break
		}
		if err := more(); err != nil {
			if errors.Is(err, ErrTruncated) {
				// Closed without answering: that is how a server refuses a
				// handshake it does not accept.
				return fail(fmt.Errorf("%w: server closed the connection without answering", ErrHandshake))
			}
			return fail(err)
		}
	}
	// Error frame.
	for {
		ef, n, need, err := ParseFrame(r.buf[used:r.n], 4096)
		if err != nil {
			return fail(err)
		}
		if !need {
			used += n
			if len(ef) > 0 {
				return parseRemoteError(string(ef))
			}
			break
		}
		if err := more(); err != nil {
			return fail(err)
		}
	}
	// Payload frame.
	for {
		pf, n, need, err := ParseFrame(r.buf[used:r.n], maxReply)
		if err != nil {
			return fail(err)
		}
		if !need {
			if used+n != r.n {
				return fail(fmt.Errorf("rpc: %d bytes after the reply", r.n-used-n))
			}
			if len(r.fds) > maxFDs {
				return fail(fmt.Errorf("rpc: %d fds on the reply, expected at most %d", len(r.fds), maxFDs))
			}
			got := r.takeFDs()
			if err := done(pf, got); err != nil {
				closeFiles(got)
				return err
			}
			return nil
		}
		if err := more(); err != nil {
			return fail(err)
		}
	}
}

func isReset(err error) bool {
	return errors.Is(err, os.ErrClosed) || strings.Contains(err.Error(), "broken pipe") ||
		strings.Contains(err.Error(), "connection reset")
}

func timeoutErr(err error) error {
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	return err
}
