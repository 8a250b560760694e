package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"sluice/internal/grant"
	"sluice/internal/names"
	"sluice/internal/optable"
	"sluice/internal/revoke"
	"sluice/internal/ticket"
	"sluice/msg"
	"sluice/rpc"
)

// ShellClient is the policy side of "policy to shell"; *rpc.Client is one.
type ShellClient interface {
	Call(ctx context.Context, req any, fds []*os.File, resp any) ([]*os.File, error)
}

// Handler serves "web to policy".
type Handler struct {
	Key grant.Key
	// Revoked is checked on every call after the MAC (see package revoke);
	// nil: no revocation check (tests; sluice-policy always sets one when
	// given --revocation-dir).
	Revoked *revoke.Checker
	Policy  *Policy
	Shell   ShellClient
	// PtyStore is "policy to ptystore": every session is put there before
	// create answers, so whoever gets the fd holds nothing ptystore cannot
	// end. Required for create.
	PtyStore ShellClient
	Log      *slog.Logger
	Now      func() time.Time // default time.Now
}

// Tables is policy's whole surface.
//
// "web to policy" (the frontend's uid, from the kernel): open a shell the
// policy file allows, the targets it offers, the machines the user may
// audit. Every op verifies the grant in its arguments: the frontend's
// word about the user counts for nothing.
//
// "ptystore to policy" (ptystore's uid or group): whether the live
// sessions ptystore holds are still allowed, and audit scopes for
// ptystore's audit ops. "record to policy" (the recording helper's):
// whether an auditor's grant may play recordings, and of which machines.
//
// With --fleet-host, "gateway to policy" (the relay account) serves the
// web ops the gateway package lists, under a host grant (package gateway).
func (h *Handler) Tables() []optable.Table {
	return []optable.Table{
		{
			Protocol: msg.ProtoWebToPolicy,
			Ops: []optable.Entry{
				optable.OpFDs(msg.OpCreateShellSession, 0, 1, h.create),
				optable.Op(msg.OpAllowedTargets, h.targets),
				optable.Op(msg.OpAuditScope, h.auditScope),
			},
		},
		{
			Protocol: msg.ProtoPtyStoreToPolicy,
			Ops: []optable.Entry{
				optable.Op(msg.OpCheckSessions, h.checkSessions),
				optable.Op(msg.OpAuditScope, h.auditScope),
			},
		},
		{
			Protocol: msg.ProtoRecordToPolicy,
			Ops: []optable.Entry{
				optable.Op(msg.OpCheckAudit, h.checkAudit),
			},
		},
	}
}

// verify checks a request's grant with grant.Verifier, the same way for
// every op and as every other helper does. logAttrs say what was asked,
// for the log line of a refusal.
func (h *Handler) verify(call *rpc.Call, g msg.Grant, now time.Time, logAttrs ...any) error {
	v := grant.Verifier{Key: h.Key, Now: func() time.Time { return now }}
	if h.Revoked != nil {
		v.Revoked = h.Revoked
	}
	err := v.Verify(g)
	if err == nil {
		return nil
	}
	what := "policy: bad grant"
	switch {
	case errors.Is(err, revoke.ErrRevoked), errors.Is(err, revoke.ErrUnavailable):
		what = "policy: revoked grant"
	case errors.Is(err, grant.ErrBadUser):
		// Authentic, so auth signed it: auth and policy disagree.
		what = "policy: grant for an invalid user name"
	}
	h.log().Warn(what, append(append([]any{"op", call.Label, "user", g.User}, logAttrs...),
		"pid", call.Peer.PID, "err", err)...)
	return grant.Refusal(err)
}

// targets serves msg.OpAllowedTargets: the login shells the allow rules
// offer the grant's user, for the new-session form to show. It decides
// nothing; create-shell-session is still decided rule by rule.
func (h *Handler) targets(_ context.Context, call *rpc.Call, a msg.AllowedTargets) (msg.AllowedTargetsReply, error) {
	if err := h.verify(call, a.Grant, h.now()); err != nil {
		return msg.AllowedTargetsReply{}, err
	}
	ts, truncated := h.Policy.Targets(a.Grant.User, msg.MaxTargets)
	rep := msg.AllowedTargetsReply{Targets: make([]msg.Target, 0, len(ts)), Truncated: truncated}
	for _, t := range ts {
		rep.Targets = append(rep.Targets, msg.Target{User: t.Account, Machine: t.Machine, Pattern: t.Pattern()})
	}
	h.log().Info("policy: allowed targets", "user", a.Grant.User, "targets", len(rep.Targets), "truncated", truncated)
	return rep, nil
}

// auditScope serves msg.OpAuditScope on both protocols: the machines the
// grant's user may audit. The grant is verified as for every op, so a
// forged, expired or revoked grant audits nothing.
func (h *Handler) auditScope(_ context.Context, call *rpc.Call, a msg.AuditScope) (msg.AuditScopeReply, error) {
	if err := h.verify(call, a.Grant, h.now()); err != nil {
		return msg.AuditScopeReply{}, err
	}
	machines, rules := h.Policy.AuditScope(a.Grant.User)
	if machines == nil {
		machines = []string{}
	}
	h.log().Info("policy: audit scope", "user", a.Grant.User, "machines", machines, "rules", rules)
	return msg.AuditScopeReply{Machines: machines, Rules: rules}, nil
}

// create serves msg.OpCreateShellSession: check the grant, decide, and on
// allow get the shell from the shell helper and pass its pty master on.
func (h *Handler) create(ctx context.Context, call *rpc.Call, a msg.CreateShellSession) (msg.CreateShellSessionReply, []*os.File, error) {
	now := h.now()
	if err := h.verify(call, a.Grant, now, "unix_user", a.User, "machine", a.Machine); err != nil {
		return msg.CreateShellSessionReply{}, nil, err
	}
	if err := validate(a); err != nil {
		return msg.CreateShellSessionReply{}, nil, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}

	d := h.Policy.Decide(Request{User: a.Grant.User, UnixUser: a.User, Machine: a.Machine, Args: a.Args})
	rule := "default deny: no rule matched"
	if d.Rule != nil {
		rule = d.Rule.String()
	}
	result := "deny"
	if d.Allow {
		result = "allow"
	}
	log := h.log().With("user", a.Grant.User, "unix_user", a.User, "machine", a.Machine)
	log.Info("policy: decision", "result", result, "rule", rule, "args", a.Args)
	if !d.Allow {
		return msg.CreateShellSessionReply{}, nil, rpc.Errorf(msg.CodeDenied, "%s", d.Reason)
	}

	env, dropped := FilterEnv(a.Env)
	if dropped > 0 {
		log.Info("policy: dropped environment entries", "dropped", dropped)
	}
	open := msg.OpenShell{Machine: a.Machine, User: a.User, Args: a.Args, Env: env, Requester: a.Grant.User, Record: d.Rule.Record}
	// From here the create runs on its own deadline, not what is left of
	// the caller's: a shell opened just as that passes would otherwise be
	// only hung up (by the shell helper, whose answer nobody reads, or by
	// policy, whose put failed), which a process ignoring SIGHUP outlives,
	// instead of stored, where sessions end, the detached limit and
	// revocation reach it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	// Exactly one fd, the pty master; any other number is closed and an
	// error, logged here like any failure of the shell helper.
	rep, fds, err := optable.Call[msg.OpenShellReply](cctx, h.Shell, msg.OpOpenShell, open, nil, 1)
	if err != nil {
		log.Warn("policy: shell helper failed", "err", err)
		var re *rpc.RemoteError
		if errors.As(err, &re) && re.Code == msg.CodeFailed {
			return msg.CreateShellSessionReply{}, nil, rpc.Errorf(msg.CodeFailed, "%s", re.Msg)
		}
		return msg.CreateShellSessionReply{}, nil, rpc.Errorf(msg.CodeFailed, "the shell could not be opened; see the policy helper's log")
	}
	info := msg.SessionInfo{
		ID:       rep.SessionID,
		Owner:    a.Grant.User,
		UnixUser: a.User,
		Machine:  a.Machine,
		Created:  now.UnixMilli(),
		Sharing:  msg.SharePrivate,
		PID:      rep.PID,
	}
	// The ticket is what lets ptystore believe info: it checks it against
	// the fd it receives, whoever the caller of put.
	tk, err := h.ticket(info, fds[0], now)
	if err != nil {
		closeFiles(fds) // not held anywhere: the shell hangs up
		log.Error("policy: no session ticket", "session", rep.SessionID, "err", err)
		return msg.CreateShellSessionReply{}, nil, rpc.Errorf(msg.CodeFailed, "the session could not be vouched for; see the policy helper's log")
	}
	// Put before anyone else holds the fd: a caller that kept it without
	// putting it would hold a shell that sessions end, users disable
	// --end-sessions and on-revoke end never reach.
	// The limits go with the put: ptystore asking policy for them would
	// need a second policy instance while this one waits, and with every
	// instance busy in a create that call waits out the deadline.
	limits := h.Policy.LimitsFor(d.Rule)
	put, err := h.put(cctx, msg.PtyPut{Grant: a.Grant, Session: info, Ticket: tk, Limits: &limits}, fds[0])
	if err != nil {
		closeFiles(fds) // fail closed: the shell hangs up
		log.Warn("policy: ptystore did not take the session; its fd closed (ptystore ends a session it refuses)", "session", rep.SessionID, "pid", rep.PID, "err", err)
		var re *rpc.RemoteError
		if errors.As(err, &re) && (re.Code == msg.CodeDenied || re.Code == msg.CodeBusy) {
			return msg.CreateShellSessionReply{}, nil, rpc.Errorf(re.Code, "%s", re.Msg)
		}
		return msg.CreateShellSessionReply{}, nil, rpc.Errorf(msg.CodeFailed, "the session could not be stored; see the policy helper's log")
	}
	log.Info("policy: session created", "session", rep.SessionID, "pid", rep.PID, "rule", rule)
	return msg.CreateShellSessionReply{Session: put.Session, Rule: rule, Limits: put.Limits}, fds, nil
}

// finishTimeout bounds opening the shell and putting it, which run even
// when the create's caller has given up (create).
const finishTimeout = 10 * time.Second

// put hands ptystore a dup of f; the caller keeps f to pass on.
func (h *Handler) put(ctx context.Context, a msg.PtyPut, f *os.File) (msg.PtyPutReply, error) {
	if h.PtyStore == nil {
		return msg.PtyPutReply{}, errors.New("policy: no ptystore client")
	}
	rep, _, err := optable.Call[msg.PtyPutReply](ctx, h.PtyStore, msg.OpPtyPut, a, []*os.File{f}, 0)
	if err != nil {
		return msg.PtyPutReply{}, fmt.Errorf("policy: put %s: %w", a.Session.ID, err)
	}
	return rep, nil
}

// ticket signs info and the kernel's identity of f (package ticket).
func (h *Handler) ticket(info msg.SessionInfo, f *os.File, now time.Time) (msg.SessionTicket, error) {
	fd, err := ticket.Identify(f)
	if err != nil {
		return msg.SessionTicket{}, err
	}
	return ticket.Sign(h.Key, info, fd, now.Add(ticket.Lifetime))
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func validate(a msg.CreateShellSession) error {
	if !names.UnixUser(a.User) {
		return fmt.Errorf("invalid unix user name %q", a.User)
	}
	if !names.Machine(a.Machine) {
		return fmt.Errorf("invalid machine name %q", a.Machine)
	}
	if len(a.Args) > msg.MaxArgs {
		return fmt.Errorf("%d args, at most %d", len(a.Args), msg.MaxArgs)
	}
	for i, arg := range a.Args {
		if strings.IndexByte(arg, 0) >= 0 {
			return fmt.Errorf("arg %d contains NUL", i)
		}
	}
	return nil
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

// checkSessions serves msg.OpCheckSessions on "ptystore to policy". The
// route's allowlist (ptystore's uid or group, from the kernel's
// credentials) is who may ask; the entries' users are ptystore's record
// of who owns and who attaches, which no one else can reach this op to
// claim.
func (h *Handler) checkSessions(_ context.Context, call *rpc.Call, a msg.CheckSessions) (msg.CheckSessionsReply, error) {
	if len(a.Sessions) > msg.MaxCheckSessions {
		return msg.CheckSessionsReply{}, rpc.Errorf(rpc.CodeBadRequest, "%d sessions, at most %d", len(a.Sessions), msg.MaxCheckSessions)
	}
	for i, s := range a.Sessions {
		if !names.SluiceUser(s.User) || !names.UnixUser(s.UnixUser) || !names.Machine(s.Machine) {
			return msg.CheckSessionsReply{}, rpc.Errorf(rpc.CodeBadRequest, "session %d: invalid user, unix user or machine", i)
		}
	}
	if a.Grant != nil {
		if err := h.verify(call, *a.Grant, h.now()); err != nil {
			return msg.CheckSessionsReply{}, err
		}
	}
	rep := msg.CheckSessionsReply{Verdicts: make([]msg.Verdict, 0, len(a.Sessions)), OnRevoke: h.Policy.OnRevoke}
	denied := 0
	for _, s := range a.Sessions {
		d := h.Policy.SessionAllowed(s.User, s.UnixUser, s.Machine)
		v := msg.Verdict{ID: s.ID, Allow: d.Allow, Reason: d.Reason, Rule: "default deny: no rule matched"}
		if d.Rule != nil {
			v.Rule = d.Rule.String()
		}
		// A refusal gets the file's defaults: a session on-revoke detach
		// keeps is still bounded by them.
		v.Limits = h.Policy.LimitsFor(nil)
		if d.Allow {
			v.Limits = h.Policy.LimitsFor(d.Rule)
		}
		if !d.Allow {
			denied++
			h.log().Info("policy: live session no longer allowed", "session", s.ID, "user", s.User,
				"unix_user", s.UnixUser, "machine", s.Machine, "rule", v.Rule, "on_revoke", rep.OnRevoke)
		}
		rep.Verdicts = append(rep.Verdicts, v)
	}
	h.log().Info("policy: sessions checked", "sessions", len(a.Sessions), "denied", denied)
	return rep, nil
}

// checkAudit serves msg.OpCheckAudit on "record to policy": the
// recording helper asking, for an auditor's grant it was handed by the
// frontend, whether and of which machines they may play recordings. The
// route's allowlist (the recording helper's uid or group) is who may
// ask; the grant is verified here again, so a recording helper given a
// forged, expired or revoked grant gets bad-grant, never a scope.
func (h *Handler) checkAudit(_ context.Context, call *rpc.Call, a msg.CheckAudit) (msg.CheckAuditReply, error) {
	if err := h.verify(call, a.Grant, h.now()); err != nil {
		return msg.CheckAuditReply{}, err
	}
	machines, rules := h.Policy.AuditScope(a.Grant.User)
	rep := msg.CheckAuditReply{Allow: len(machines) > 0, Machines: machines, Rules: rules}
	if !rep.Allow {
		_, rep.Reason = h.Policy.MayAudit(a.Grant.User)
	}
	h.log().Info("policy: check-audit", "user", a.Grant.User, "allow", rep.Allow, "machines", machines, "rules", rules)
	return rep, nil
}
