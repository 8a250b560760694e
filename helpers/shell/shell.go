// Package shell is the shell helper: the only component that holds the
// privilege of opening login shells. It serves "policy to shell": the
// policy helper, having already decided, asks for a shell for unix account
// U on machine M, and gets back the pty master and a session id. Opening
// is done by a Backend: machined over D-Bus in production, or an embedded
// pty-and-fork backend where there is no machined.
package shell

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/names"
	"sluice/helpers/shell/pty"
	"sluice/msg"
	"sluice/rpc"
)

// Opened is a freshly started shell: its pty master (owned by the caller)
// and, when the backend knows it, the pid of the session leader.
type Opened struct {
	Master *os.File
	PID    int
}

// Backend opens a login shell (or, with Args, a fixed command) for a unix
// account on a machine. Requests reach it already validated.
type Backend interface {
	Open(ctx context.Context, req msg.OpenShell) (Opened, error)
}

// ErrRefused is what a backend returns for a request it will never serve
// (wrong machine for the backend, a user it may not switch to). It is still
// reported to the caller as "failed": the request was allowed by policy,
// and the shell could not be opened.
var ErrRefused = errors.New("shell: refused")

// Limits on a request, far above any sane use, so that a bad caller cannot
// make the helper build huge argv or environment blocks.
const (
	MaxArgs   = 64
	MaxEnv    = 64
	MaxArgLen = 4096
)

// Handler serves msg.OpOpenShell.
type Handler struct {
	Backend Backend
	Log     *slog.Logger
	// Recorder hands a session's pty master to the recording helper
	// (record-session) and returns the session socket the helper answers
	// with (package termsock); nil: recording is unavailable, and a rule
	// that records fails closed (or, fail-open, goes on unrecorded).
	Recorder func(ctx context.Context, a msg.RecordSession, inner *os.File) (*os.File, error)
}

// Handle is the rpc handler for "policy to shell".
func (h *Handler) Handle(ctx context.Context, call *rpc.Call) (rpc.Reply, error) {
	var req msg.Request
	if err := call.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	call.Label = req.Op
	if req.Op != msg.OpOpenShell {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
	}
	var open msg.OpenShell
	if err := msgpack.Unmarshal(req.Args, &open); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "undecodable %s args: %v", req.Op, err)
	}
	if err := Validate(open); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "%v", err)
	}
	id, err := NewSessionID()
	if err != nil {
		return rpc.Reply{}, fmt.Errorf("shell: session id: %w", err)
	}
	log := h.logger().With("session", id, "requester", open.Requester, "unix_user", open.User,
		"machine", open.Machine, "args", len(open.Args))
	sh, err := h.Backend.Open(ctx, open)
	if err != nil {
		log.Warn("shell: open failed", "err", err)
		return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "%v", err)
	}
	log.Info("shell: opened", "pid", sh.PID)
	if open.Record != nil {
		m, err := h.record(ctx, id, open, sh.Master)
		switch {
		case err == nil:
			sh.Master = m
			log.Info("shell: recording", "input", open.Record.Input)
		case open.Record.FailOpen:
			log.Error("shell: recording unavailable, session goes on unrecorded (fail-open)", "err", err)
		default:
			// Closing the only master hangs the shell up: nothing runs
			// that is not recorded.
			sh.Master.Close()
			log.Error("shell: recording unavailable, shell ended (fail-closed)", "err", err)
			return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "recording unavailable, so the session was not started: %v", err)
		}
	}
	return rpc.Reply{
		Body: msg.OpenShellReply{SessionID: id, PID: int32(sh.PID)},
		FDs:  []*os.File{sh.Master},
	}, nil
}

// record puts the recording helper between the shell's pty and the
// caller, and returns the recorder's session socket, which is all the
// caller (and, after it, policy, the frontend and ptystore) ever gets: no
// one but the recorder holds the shell's master any more.
func (h *Handler) record(ctx context.Context, id string, open msg.OpenShell, inner *os.File) (*os.File, error) {
	if h.Recorder == nil {
		return nil, errors.New("no recording helper configured")
	}
	a := msg.RecordSession{Session: id, Requester: open.Requester, UnixUser: open.User, Machine: open.Machine,
		Input: open.Record.Input, FailOpen: open.Record.FailOpen, Term: termOf(open.Env)}
	if rows, cols, err := pty.GetSize(inner); err == nil {
		a.Width, a.Height = cols, rows
	}
	sock, err := h.Recorder(ctx, a, inner)
	if err != nil {
		return nil, err
	}
	inner.Close()
	return sock, nil
}

func termOf(env []string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "TERM="); ok {
			return v
		}
	}
	return ""
}

func (h *Handler) logger() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

// NewSessionID returns 16 random bytes in hex.
func NewSessionID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// Validate checks a request's shape. Policy already decided who may have
// what; this only keeps malformed input away from the backends (a name
// starting with '-' read as an option, a NUL cutting a string short).
func Validate(r msg.OpenShell) error {
	if !names.UnixUser(r.User) {
		return fmt.Errorf("invalid unix user name %q", r.User)
	}
	if !names.Machine(r.Machine) {
		return fmt.Errorf("invalid machine name %q", r.Machine)
	}
	if len(r.Args) > MaxArgs {
		return fmt.Errorf("%d args, at most %d", len(r.Args), MaxArgs)
	}
	if len(r.Args) > 0 && !strings.HasPrefix(r.Args[0], "/") {
		return fmt.Errorf("command %q is not an absolute path", r.Args[0])
	}
	for i, a := range r.Args {
		if len(a) > MaxArgLen || strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("arg %d: too long or contains NUL", i)
		}
	}
	if len(r.Env) > MaxEnv {
		return fmt.Errorf("%d env entries, at most %d", len(r.Env), MaxEnv)
	}
	for i, e := range r.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || len(e) > MaxArgLen || strings.IndexByte(e, 0) >= 0 {
			return fmt.Errorf("env entry %d is not KEY=VALUE", i)
		}
	}
	return nil
}
