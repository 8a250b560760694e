package shell

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
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

// Tables is the shell helper's whole surface: "policy to shell" (the
// policy helper's uid, from the kernel), one op. Policy has decided
// before it asks; the request is validated here again all the same, the
// way OpenSSH's monitor checks again "in case the child got corrupted".
func (h *Handler) Tables() []optable.Table {
	return []optable.Table{{
		Protocol: msg.ProtoPolicyToShell,
		Ops: []optable.Entry{
			optable.OpFDs(msg.OpOpenShell, 0, 1, h.open),
		},
	}}
}

// open serves msg.OpOpenShell: a validated request's shell, recorded when
// the rule says so; the reply carries its pty master.
func (h *Handler) open(ctx context.Context, _ *rpc.Call, open msg.OpenShell) (msg.OpenShellReply, []*os.File, error) {
	if err := Validate(open); err != nil {
		return msg.OpenShellReply{}, nil, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	id, err := NewSessionID()
	if err != nil {
		return msg.OpenShellReply{}, nil, fmt.Errorf("shell: session id: %w", err)
	}
	log := h.logger().With("session", id, "requester", open.Requester, "unix_user", open.User,
		"machine", open.Machine, "args", len(open.Args))
	sh, err := h.Backend.Open(ctx, open)
	if err != nil {
		log.Warn("shell: open failed", "err", err)
		return msg.OpenShellReply{}, nil, rpc.Errorf(msg.CodeFailed, "%v", err)
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
			return msg.OpenShellReply{}, nil, rpc.Errorf(msg.CodeFailed, "recording unavailable, so the session was not started: %v", err)
		}
	}
	return msg.OpenShellReply{SessionID: id, PID: int32(sh.PID)}, []*os.File{sh.Master}, nil
}
