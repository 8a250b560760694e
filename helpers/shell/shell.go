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

	"sluice/internal/names"
	"sluice/internal/pty"
	"sluice/msg"
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
// make the helper build huge argv or environment blocks. The argv count is
// msg.MaxArgs, which policy checks too.
const (
	MaxEnv    = 64
	MaxArgLen = 4096
)

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
	if len(r.Args) > msg.MaxArgs {
		return fmt.Errorf("%d args, at most %d", len(r.Args), msg.MaxArgs)
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
