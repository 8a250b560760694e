package frontend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"sluice/internal/optable"
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

// ask is the frontend's one call to a helper: optable.Call (args in, the
// reply decoded into R, exactly want fds on it), with a helper that went
// away told apart as a StoppedError for the page.
func ask[R any](ctx context.Context, cl helperClient, op string, args any, send []*os.File, want int) (R, []*os.File, error) {
	r, fds, err := optable.Call[R](ctx, cl.Client, op, args, send, want)
	if err != nil {
		if stopped(err) {
			err = &StoppedError{Helper: cl.name, Err: err}
		}
		return r, nil, fmt.Errorf("frontend: %s: %w", op, err)
	}
	return r, fds, nil
}

// askOne is ask for an op whose reply carries one fd, the caller's to close.
func askOne[R any](ctx context.Context, cl helperClient, op string, args any) (R, *os.File, error) {
	r, fds, err := ask[R](ctx, cl, op, args, nil, 1)
	if err != nil {
		return r, nil, err
	}
	return r, fds[0], nil
}

func (h *Helpers) RegisterBegin(ctx context.Context, a msg.RegisterBegin) (msg.RegisterBeginReply, error) {
	r, _, err := ask[msg.RegisterBeginReply](ctx, h.auth, msg.OpRegisterBegin, a, nil, 0)
	return r, err
}

func (h *Helpers) RegisterFinish(ctx context.Context, a msg.RegisterFinish) (msg.RegisterFinishReply, error) {
	r, _, err := ask[msg.RegisterFinishReply](ctx, h.auth, msg.OpRegisterFinish, a, nil, 0)
	return r, err
}

func (h *Helpers) LoginBegin(ctx context.Context, a msg.LoginBegin) (msg.LoginBeginReply, error) {
	r, _, err := ask[msg.LoginBeginReply](ctx, h.auth, msg.OpLoginBegin, a, nil, 0)
	return r, err
}

func (h *Helpers) LoginFinish(ctx context.Context, a msg.LoginFinish) (msg.LoginFinishReply, error) {
	r, _, err := ask[msg.LoginFinishReply](ctx, h.auth, msg.OpLoginFinish, a, nil, 0)
	return r, err
}

func (h *Helpers) CreateShellSession(ctx context.Context, a msg.CreateShellSession) (msg.CreateShellSessionReply, *os.File, error) {
	return askOne[msg.CreateShellSessionReply](ctx, h.policy, msg.OpCreateShellSession, a)
}

func (h *Helpers) AllowedTargets(ctx context.Context, a msg.AllowedTargets) (msg.AllowedTargetsReply, error) {
	r, _, err := ask[msg.AllowedTargetsReply](ctx, h.policy, msg.OpAllowedTargets, a, nil, 0)
	return r, err
}

func (h *Helpers) PtyGet(ctx context.Context, a msg.PtyGet) (msg.PtyGetReply, *os.File, error) {
	return askOne[msg.PtyGetReply](ctx, h.ptystore, msg.OpPtyGet, a)
}

func (h *Helpers) PtyList(ctx context.Context, a msg.PtyList) (msg.PtyListReply, error) {
	r, _, err := ask[msg.PtyListReply](ctx, h.ptystore, msg.OpPtyList, a, nil, 0)
	return r, err
}

func (h *Helpers) PtyDrop(ctx context.Context, a msg.PtyDrop) error {
	_, _, err := ask[msg.PtyDropReply](ctx, h.ptystore, msg.OpPtyDrop, a, nil, 0)
	return err
}

func (h *Helpers) PtyShare(ctx context.Context, a msg.PtyShare) (msg.PtyShareReply, error) {
	r, _, err := ask[msg.PtyShareReply](ctx, h.ptystore, msg.OpPtyShare, a, nil, 0)
	return r, err
}
