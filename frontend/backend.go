package frontend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

// Backend is everything the frontend asks of the helpers. Helpers is the
// real one; the interface exists so benchmarks can stand the page up over
// a bare pty without the privileged parts.
type Backend interface {
	RegisterBegin(ctx context.Context, a msg.RegisterBegin) (msg.RegisterBeginReply, error)
	RegisterFinish(ctx context.Context, a msg.RegisterFinish) (msg.RegisterFinishReply, error)
	LoginBegin(ctx context.Context, a msg.LoginBegin) (msg.LoginBeginReply, error)
	LoginFinish(ctx context.Context, a msg.LoginFinish) (msg.LoginFinishReply, error)
	// CreateShellSession returns the new session's pty master.
	CreateShellSession(ctx context.Context, a msg.CreateShellSession) (msg.CreateShellSessionReply, *os.File, error)
	// AllowedTargets lists the shells the policy offers the grant's user.
	AllowedTargets(ctx context.Context, a msg.AllowedTargets) (msg.AllowedTargetsReply, error)
	// PtyPut hands ptystore a copy of pty; the caller keeps its own.
	PtyPut(ctx context.Context, a msg.PtyPut, pty *os.File) (msg.PtyPutReply, error)
	PtyGet(ctx context.Context, a msg.PtyGet) (msg.PtyGetReply, *os.File, error)
	PtyList(ctx context.Context, a msg.PtyList) (msg.PtyListReply, error)
	PtyDrop(ctx context.Context, a msg.PtyDrop) error
	PtyShare(ctx context.Context, a msg.PtyShare) (msg.PtyShareReply, error)
}

// Helpers reaches the auth, policy, ptystore and recording helpers over
// their sockets, as component "frontend".
type Helpers struct {
	auth, policy, ptystore, record helperClient
}

// helperClient is a helper's client with the helper's name, for errors
// the page shows.
type helperClient struct {
	name string
	*rpc.Client
}

// StoppedError is a call cut off because the helper went away before it
// answered (killed, crashed, restarted). Whether it acted is unknown; a
// new call reaches its restarted self or a fresh Accept=yes instance.
type StoppedError struct {
	Helper string // component name: "auth", "policy", "ptystore"
	Err    error
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("the %s helper stopped before answering: %v", e.Helper, e.Err)
}

func (e *StoppedError) Unwrap() error { return e.Err }

// stopped reports whether a call's error is the helper going away: the
// connection ended before the helper's first byte (also how a server
// refuses a handshake, so a build mismatch reads the same; the log has
// the error) or part way through its answer. The rpc client reads a reset
// (the request still unread) as the end too.
func stopped(err error) bool {
	return errors.Is(err, rpc.ErrTruncated) ||
		errors.Is(err, rpc.ErrHandshake) && strings.Contains(err.Error(), "closed the connection without answering")
}

// NewHelpers builds the clients from the suite's manifest and runtime dir.
func NewHelpers() (*Helpers, error) {
	var h Helpers
	for _, c := range []struct {
		hc          *helperClient
		name, proto string
	}{{&h.auth, msg.Auth, msg.ProtoWebToAuth}, {&h.policy, msg.Policy, msg.ProtoWebToPolicy}, {&h.ptystore, msg.PtyStore, msg.ProtoWebToPtyStore}, {&h.record, msg.Record, msg.ProtoWebToRecord}} {
		cl, err := suite.Client(msg.Frontend, c.proto)
		if err != nil {
			return nil, fmt.Errorf("frontend: client for %q: %w", c.proto, err)
		}
		*c.hc = helperClient{name: c.name, Client: cl}
	}
	return &h, nil
}

func call(ctx context.Context, cl helperClient, op string, args any, fds []*os.File, reply any) ([]*os.File, error) {
	raw, err := msgpack.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("frontend: encode %s: %w", op, err)
	}
	got, err := cl.Call(ctx, msg.Request{Op: op, Args: raw}, fds, reply)
	if err != nil {
		if stopped(err) {
			err = &StoppedError{Helper: cl.name, Err: err}
		}
		return nil, fmt.Errorf("frontend: %s: %w", op, err)
	}
	return got, nil
}

// noFDs closes fds a reply should not have carried.
func noFDs(fds []*os.File) {
	for _, f := range fds {
		f.Close()
	}
}

// oneFD returns the single fd a reply must carry.
func oneFD(op string, fds []*os.File) (*os.File, error) {
	if len(fds) != 1 {
		noFDs(fds)
		return nil, fmt.Errorf("frontend: %s: reply carried %d fds, want 1", op, len(fds))
	}
	return fds[0], nil
}

func (h *Helpers) RegisterBegin(ctx context.Context, a msg.RegisterBegin) (r msg.RegisterBeginReply, err error) {
	fds, err := call(ctx, h.auth, msg.OpRegisterBegin, a, nil, &r)
	noFDs(fds)
	return r, err
}

func (h *Helpers) RegisterFinish(ctx context.Context, a msg.RegisterFinish) (r msg.RegisterFinishReply, err error) {
	fds, err := call(ctx, h.auth, msg.OpRegisterFinish, a, nil, &r)
	noFDs(fds)
	return r, err
}

func (h *Helpers) LoginBegin(ctx context.Context, a msg.LoginBegin) (r msg.LoginBeginReply, err error) {
	fds, err := call(ctx, h.auth, msg.OpLoginBegin, a, nil, &r)
	noFDs(fds)
	return r, err
}

func (h *Helpers) LoginFinish(ctx context.Context, a msg.LoginFinish) (r msg.LoginFinishReply, err error) {
	fds, err := call(ctx, h.auth, msg.OpLoginFinish, a, nil, &r)
	noFDs(fds)
	return r, err
}

func (h *Helpers) CreateShellSession(ctx context.Context, a msg.CreateShellSession) (r msg.CreateShellSessionReply, f *os.File, err error) {
	fds, err := call(ctx, h.policy, msg.OpCreateShellSession, a, nil, &r)
	if err != nil {
		return r, nil, err
	}
	f, err = oneFD(msg.OpCreateShellSession, fds)
	return r, f, err
}

func (h *Helpers) AllowedTargets(ctx context.Context, a msg.AllowedTargets) (r msg.AllowedTargetsReply, err error) {
	fds, err := call(ctx, h.policy, msg.OpAllowedTargets, a, nil, &r)
	noFDs(fds)
	return r, err
}

func (h *Helpers) PtyPut(ctx context.Context, a msg.PtyPut, pty *os.File) (r msg.PtyPutReply, err error) {
	fds, err := call(ctx, h.ptystore, msg.OpPtyPut, a, []*os.File{pty}, &r)
	noFDs(fds)
	return r, err
}

func (h *Helpers) PtyGet(ctx context.Context, a msg.PtyGet) (r msg.PtyGetReply, f *os.File, err error) {
	fds, err := call(ctx, h.ptystore, msg.OpPtyGet, a, nil, &r)
	if err != nil {
		return r, nil, err
	}
	f, err = oneFD(msg.OpPtyGet, fds)
	return r, f, err
}

func (h *Helpers) PtyList(ctx context.Context, a msg.PtyList) (r msg.PtyListReply, err error) {
	fds, err := call(ctx, h.ptystore, msg.OpPtyList, a, nil, &r)
	noFDs(fds)
	return r, err
}

func (h *Helpers) PtyDrop(ctx context.Context, a msg.PtyDrop) error {
	var r msg.PtyDropReply
	fds, err := call(ctx, h.ptystore, msg.OpPtyDrop, a, nil, &r)
	noFDs(fds)
	return err
}

func (h *Helpers) PtyShare(ctx context.Context, a msg.PtyShare) (r msg.PtyShareReply, err error) {
	fds, err := call(ctx, h.ptystore, msg.OpPtyShare, a, nil, &r)
	noFDs(fds)
	return r, err
}
