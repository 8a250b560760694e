package optable

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
)

// Caller is the client side of a table: *rpc.Client is one.
type Caller interface {
	Call(ctx context.Context, req any, fds []*os.File, resp any) ([]*os.File, error)
}

// Call is the one client-side call of an op: args go in a msg.Request as
// the op's msgpack arguments, send rides with them as SCM_RIGHTS, and the
// reply decodes into R. The reply must carry exactly want fds (an op
// table's FDsOut for the op): otherwise they are closed and the call
// fails, so a caller never holds an fd it did not expect. The caller owns
// the fds returned. Errors from cl are returned unwrapped, for the caller
// to explain in its own terms. cl must not keep the request after Call
// returns: its Args are a pooled buffer.
func Call[R any](ctx context.Context, cl Caller, op string, args any, send []*os.File, want int) (R, []*os.File, error) {
	var r R
	fds, err := CallInto(ctx, cl, op, args, send, &r, want)
	return r, fds, err
}

// CallInto is Call decoding into reply (a pointer), for a caller that
// picks the reply's type at run time (sluicectl).
func CallInto(ctx context.Context, cl Caller, op string, args any, send []*os.File, reply any, want int) ([]*os.File, error) {
	// The args are encoded into a pooled buffer: Caller.Call copies them
	// into its request frame before it returns, and msgpack.Marshal's own
	// buffer grows by doubling, half its allocations garbage at once.
	buf := argBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			argBufs.Put(buf)
		}
	}()
	buf.Reset()
	enc := msgpack.GetEncoder()
	enc.Reset(buf)
	err := enc.Encode(args)
	msgpack.PutEncoder(enc)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", op, err)
	}
	fds, err := cl.Call(ctx, msg.Request{Op: op, Args: buf.Bytes()}, send, reply)
	if err != nil {
		closeAll(fds)
		return nil, err
	}
	if len(fds) != want {
		closeAll(fds)
		return nil, fmt.Errorf("%s: reply carried %d fds, want %d", op, len(fds), want)
	}
	return fds, nil
}

var argBufs = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 512)) }}

// One is Call for an op whose reply carries exactly one fd.
func One[R any](ctx context.Context, cl Caller, op string, args any) (R, *os.File, error) {
	r, fds, err := Call[R](ctx, cl, op, args, nil, 1)
	if err != nil {
		return r, nil, err
	}
	return r, fds[0], nil
}

var _ Caller = (*rpc.Client)(nil)
