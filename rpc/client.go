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
	body, err := msgpack.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("rpc: encode %T: %w", req, err)
	}
	payload, rfds, err := cl.CallRaw(ctx, body, fds)
	if err != nil {
		return nil, err
	}
	if resp != nil {
		if err := msgpack.Unmarshal(payload, resp); err != nil {
			closeFiles(rfds)
			return nil, fmt.Errorf("rpc: decode reply into %T: %w", resp, err)
		}
	}
	return rfds, nil
}

// CallRaw is Call with the request and reply frames as raw bytes.
func (cl *Client) CallRaw(ctx context.Context, body []byte, fds []*os.File) ([]byte, []*os.File, error) {
	if len(body) > 1<<31 {
		return nil, nil, ErrFrameTooLarge
	}
	timeout := cl.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var d net.Dialer
	d.Deadline = deadline
	nc, err := d.DialContext(ctx, "unix", cl.Path)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w: %v", ErrTimeout, err)
		}
		return nil, nil, fmt.Errorf("rpc: dial %s: %w", cl.Path, err)
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

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
		return nil, nil, fmt.Errorf("rpc: call %s: write: %w", cl.Path, timeoutErr(werr))
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
	r := &msgReader{c: c, buf: make([]byte, 512), oob: make([]byte, oobSize)}
	defer r.closeFDs()
	fail := func(err error) ([]byte, []*os.File, error) {
		return nil, nil, fmt.Errorf("rpc: call %s: %w", cl.Path, err)
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
		h, n, need, err := ParseHello(r.buf[:r.n])
		if err != nil {
			return fail(fmt.Errorf("%w: %v", ErrHandshake, err))
		}
		if !need {
			if h != cl.Expect {
				return fail(fmt.Errorf("%w: server said %q %s, want %q %s", ErrHandshake,
					h.Intent, h.BuildID, cl.Expect.Intent, cl.Expect.BuildID))
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
				return nil, nil, parseRemoteError(string(ef))
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
			return pf, r.takeFDs(), nil
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
