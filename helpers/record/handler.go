package record

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"sluice/internal/grant"
	"sluice/internal/names"
	"sluice/internal/optable"
	"sluice/internal/pty"
	"sluice/internal/revoke"
	"sluice/internal/termsock"
	"sluice/msg"
	"sluice/rpc"
)

// Handler serves the recording helper's three routes.
type Handler struct {
	Store *Store
	Key   []byte
	// MaxSize bounds one recording (0: none); past it a fail-closed
	// session is ended.
	MaxSize int64
	Log     *slog.Logger
	// Life bounds the splices: when it is done (SIGTERM) every recorded
	// session is ended and sealed.
	Life context.Context
	// Web route: grants are verified with GrantKey (and Revoked, when
	// set), then Audit asks policy whether the user may audit.
	GrantKey grant.Key
	Revoked  *revoke.Checker
	Audit    func(ctx context.Context, g msg.Grant) (msg.CheckAuditReply, error)
	// EndShell ends a recorded shell's own session from its master (the
	// hangup helper, "record to hangup"); see Splice.EndShell.
	EndShell func(ctx context.Context, inner *os.File) error

	wg sync.WaitGroup
}

// Wait returns when every splice this handler started has ended.
func (h *Handler) Wait() { h.wg.Wait() }

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// Tables is the recording helper's whole surface.
//
// "shell to record" (the shell helper's uid, from the kernel): start
// recording a session, given the shell's pty master (checked to be one);
// the reply's fd is the session socket (package termsock) that policy,
// ptystore and the frontend get instead of the master.
//
// "admin to record" (root, the admin group): list, open (the reply's fd
// is the recording, read-only) and verify recordings, all of them.
//
// "web to record" (the frontend's uid): list and open for an auditor,
// whose grant is verified here and whose scope policy decides ("record to
// policy"); verify is an admin's.
func (h *Handler) Tables() []optable.Table {
	return []optable.Table{
		{
			Protocol: msg.ProtoShellToRecord,
			Ops:      []optable.Entry{optable.OpFDs(msg.OpRecordSession, 1, 1, h.recordSession)},
		},
		{
			Protocol: msg.ProtoAdminToRecord,
			Ops: []optable.Entry{
				optable.Op(msg.OpRecList, h.recList(false)),
				optable.OpFDs(msg.OpRecOpen, 0, 1, h.recOpen(false)),
				optable.Plain(msg.OpRecVerify, h.recVerify),
			},
		},
		{
			Protocol: msg.ProtoWebToRecord,
			Ops: []optable.Entry{
				optable.Op(msg.OpRecList, h.recList(true)),
				optable.OpFDs(msg.OpRecOpen, 0, 1, h.recOpen(true)),
			},
		},
	}
}

// recordSession serves msg.OpRecordSession: start recording a session.
func (h *Handler) recordSession(_ context.Context, c *rpc.Call, a msg.RecordSession) (msg.RecordSessionReply, []*os.File, error) {
	if err := validSession(a, c.FDs); err != nil {
		closeAll(c.FDs)
		return msg.RecordSessionReply{}, nil, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	inner := c.FDs[0]
	sp, theirs, err := h.start(a, inner)
	if err != nil {
		inner.Close()
		h.log().Error("record: not recording", "session", a.Session, "err", err)
		return msg.RecordSessionReply{}, nil, rpc.Errorf(msg.CodeFailed, "recording unavailable: %v", err)
	}
	log := h.log().With("id", a.Session, "requester", a.Requester, "unix_user", a.UnixUser, "machine", a.Machine, "input", a.Input, "fail_open", a.FailOpen)
	log.Info("record: recording")
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		life := h.Life
		if life == nil {
			life = context.Background()
		}
		err := sp.Run(life)
		sp.file.Close()
		log.Info("record: ended", "size", sp.W.Size(), "err", err)
	}()
	// The server closes its copy of theirs once sent: from then on the
	// recorder holds only its own end, and sees the other's shut down.
	return msg.RecordSessionReply{ID: a.Session}, []*os.File{theirs}, nil
}

type started struct {
	*Splice
	file *os.File
}

// start creates the recording and the session socket, and returns the
// splice (not yet running) and the socket's end for the caller.
func (h *Handler) start(a msg.RecordSession, inner *os.File) (*started, *os.File, error) {
	now := time.Now()
	if err := h.Store.Prune(now); err != nil {
		h.log().Warn("record: prune", "err", err)
	}
	f, err := h.Store.Create(a.Session)
	if err != nil {
		return nil, nil, err
	}
	w, cols, rows := (*Writer)(nil), int(a.Width), int(a.Height)
	if cols == 0 || rows == 0 {
		cols, rows = 80, 24
	}
	hdr := Header{Version: 2, Width: cols, Height: rows, Timestamp: now.Unix(), Title: a.UnixUser + "@" + a.Machine,
		Sluice: Meta{ID: a.Session, Requester: a.Requester, UnixUser: a.UnixUser, Machine: a.Machine, Input: a.Input, Started: now.UnixMilli()}}
	if a.Term != "" {
		hdr.Env = map[string]string{"TERM": a.Term}
	}
	w, err = NewWriter(f, h.Key, hdr, now, h.MaxSize)
	if err == nil {
		var mine, theirs *os.File
		if mine, theirs, err = termsock.Pair(); err == nil {
			sp := &Splice{Inner: inner, Outer: mine, W: w, Input: a.Input, FailOpen: a.FailOpen, Log: h.log().With("id", a.Session), EndShell: h.EndShell}
			if err = sp.Prepare(); err == nil {
				return &started{Splice: sp, file: f}, theirs, nil
			}
			theirs.Close()
		}
	}
	// Nothing of the session was recorded: the file is not a recording.
	os.Remove(f.Name())
	f.Close()
	return nil, nil, err
}

func validSession(a msg.RecordSession, fds []*os.File) error {
	if !ValidID(a.Session) {
		return fmt.Errorf("session id %q is not 32 hex digits", a.Session)
	}
	if !names.UnixUser(a.UnixUser) || !names.Machine(a.Machine) || a.Requester != "" && !names.SluiceUser(a.Requester) {
		return errors.New("invalid requester, unix user or machine name")
	}
	if len(a.Term) > 64 {
		return errors.New("term longer than 64 bytes")
	}
	for _, r := range a.Term {
		if r <= 0x20 || r >= 0x7f {
			return fmt.Errorf("term %q has a character outside printable ASCII", a.Term)
		}
	}
	if len(fds) != 1 {
		return fmt.Errorf("record-session takes 1 fd (the shell's pty master), got %d", len(fds))
	}
	if err := pty.CheckMaster(fds[0]); err != nil {
		return fmt.Errorf("fd 1: %w", err)
	}
	return nil
}

// recList serves msg.OpRecList; web: for an auditor's grant, in its scope.
func (h *Handler) recList(web bool) func(context.Context, *rpc.Call, msg.RecList) (msg.RecListReply, error) {
	return func(ctx context.Context, _ *rpc.Call, a msg.RecList) (msg.RecListReply, error) {
		scope, err := h.auditor(ctx, web, a.Grant)
		if err != nil {
			return msg.RecListReply{}, err
		}
		list, trunc, err := h.Store.List(a, scope)
		if err != nil {
			return msg.RecListReply{}, err
		}
		return msg.RecListReply{Recordings: list, Truncated: trunc}, nil
	}
}

// recOpen serves msg.OpRecOpen: the recording's file, read-only.
func (h *Handler) recOpen(web bool) func(context.Context, *rpc.Call, msg.RecOpen) (msg.RecOpenReply, []*os.File, error) {
	return func(ctx context.Context, _ *rpc.Call, a msg.RecOpen) (msg.RecOpenReply, []*os.File, error) {
		scope, err := h.auditor(ctx, web, a.Grant)
		if err != nil {
			return msg.RecOpenReply{}, nil, err
		}
		f, info, err := h.Store.Open(a.ID)
		if err == nil && !scope(info.Machine) {
			// Out of the auditor's scope reads as absent: ids cannot be
			// probed (as ptystore's pty-audit-get).
			f.Close()
			err = ErrNotFound
		}
		if errors.Is(err, ErrNotFound) {
			return msg.RecOpenReply{}, nil, rpc.Errorf(msg.CodeNotFound, "no recording %q", a.ID)
		}
		if err != nil {
			return msg.RecOpenReply{}, nil, err
		}
		if web {
			h.log().Info("record: opened for an auditor", "id", a.ID, "auditor", a.Grant.User, "live", info.Live)
		}
		return msg.RecOpenReply{Recording: info}, []*os.File{f}, nil
	}
}

// recVerify serves msg.OpRecVerify ("admin to record" only).
func (h *Handler) recVerify(a msg.RecVerify) (msg.RecVerifyReply, error) {
	f, info, err := h.Store.Open(a.ID)
	if errors.Is(err, ErrNotFound) {
		return msg.RecVerifyReply{}, rpc.Errorf(msg.CodeNotFound, "no recording %q", a.ID)
	}
	if err != nil {
		return msg.RecVerifyReply{}, err
	}
	defer f.Close()
	return Verify(f, h.Key, info.Live)
}

// auditor: on the web route, the grant must hold and policy must let its
// user audit; the answer is which machines' recordings they may see.
// Every failure is a refusal. The admin route sees every recording.
func (h *Handler) auditor(ctx context.Context, web bool, g *msg.Grant) (func(machine string) bool, error) {
	if !web {
		return func(string) bool { return true }, nil
	}
	if g == nil {
		return nil, rpc.Errorf(msg.CodeBadGrant, "a grant is required")
	}
	v := grant.Verifier{Key: h.GrantKey}
	if h.Revoked != nil {
		v.Revoked = h.Revoked
	}
	if err := v.Verify(*g); err != nil {
		if errors.Is(err, grant.ErrNoKey) {
			return nil, rpc.Errorf(msg.CodeDenied, "auditing is not set up (no grant key)")
		}
		h.log().Warn("record: bad grant", "user", g.User, "err", err)
		return nil, grant.Refusal(err)
	}
	if h.Audit == nil {
		return nil, rpc.Errorf(msg.CodeDenied, "%s may not audit recordings", g.User)
	}
	rep, err := h.Audit(ctx, *g)
	if err != nil {
		h.log().Warn("record: check-audit", "user", g.User, "err", err)
		return nil, rpc.Errorf(msg.CodeDenied, "%s may not audit recordings (policy: %v)", g.User, err)
	}
	if !rep.Allow || len(rep.Machines) == 0 {
		reason := rep.Reason
		if reason == "" {
			reason = g.User + " may not audit recordings"
		}
		return nil, rpc.Errorf(msg.CodeDenied, "%s", reason)
	}
	return rep.Covers, nil
}
