package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/names"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

// ShellClient is the policy side of "policy to shell"; *rpc.Client is one.
type ShellClient interface {
	Call(ctx context.Context, req any, fds []*os.File, resp any) ([]*os.File, error)
}

// MaxArgs bounds a request's argv (an allowed one is in the policy file
// anyway; this only bounds what is looked at before denying).
const MaxArgs = 64

// Handler serves "web to policy".
type Handler struct {
	Key grant.Key
	// Revoked is checked on every call after the MAC (see package revoke);
	// nil: no revocation check (tests; sluice-policy always sets one when
	// given --revocation-dir).
	Revoked *revoke.Checker
	Policy  *Policy
	Shell   ShellClient
	Log     *slog.Logger
	Now     func() time.Time // default time.Now
}

// Handle serves "web to policy": msg.OpCreateShellSession and
// msg.OpAllowedTargets.
func (h *Handler) Handle(ctx context.Context, call *rpc.Call) (rpc.Reply, error) {
	var req msg.Request
	if err := call.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	call.Label = req.Op
	switch req.Op {
	case msg.OpCreateShellSession:
		return h.create(ctx, call, req)
	case msg.OpAllowedTargets:
		return h.targets(call, req)
	case msg.OpAuditScope:
		return h.auditScope(call, req)
	}
	// The caller's string is in the reply, not in the label the log
	// lines carry (as in auth).
	call.Label = "unknown"
	return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
}

// verify checks a request's grant, the same way for every op: it must
// verify with the grant key and be valid now, and name a user auth's own
// rules allow. logAttrs say what was asked, for the log line of a refusal.
func (h *Handler) verify(call *rpc.Call, g msg.Grant, now time.Time, logAttrs ...any) error {
	if err := grant.Verify(h.Key, g, now); err != nil {
		h.log().Warn("policy: bad grant", append(append([]any{"op", call.Label, "user", g.User}, logAttrs...),
			"pid", call.Peer.PID, "err", err)...)
		if errors.Is(err, grant.ErrForged) {
			return rpc.Errorf(msg.CodeBadGrant, "grant not valid")
		}
		return rpc.Errorf(msg.CodeBadGrant, "grant expired or not yet valid; sign in again")
	}
	if h.Revoked != nil {
		if err := h.Revoked.Check(g); err != nil {
			h.log().Warn("policy: revoked grant", append(append([]any{"op", call.Label, "user", g.User}, logAttrs...),
				"pid", call.Peer.PID, "err", err)...)
			if errors.Is(err, revoke.ErrRevoked) {
				return rpc.Errorf(msg.CodeBadGrant, "access revoked; sign in again")
			}
			return rpc.Errorf(msg.CodeBadGrant, "the revocation list cannot be read, so no grant is accepted; ask an admin")
		}
	}
	if !names.SluiceUser(g.User) {
		// Authentic, so auth signed it: a name outside auth's own rules
		// means the two disagree, and no rule should guess.
		h.log().Warn("policy: grant for an invalid user name", "op", call.Label, "user", g.User)
		return rpc.Errorf(msg.CodeBadGrant, "grant for an invalid user name")
	}
	return nil
}

// targets serves msg.OpAllowedTargets: the login shells the allow rules
// offer the grant's user, for the new-session form to show. It decides
// nothing; create-shell-session is still decided rule by rule.
func (h *Handler) targets(call *rpc.Call, req msg.Request) (rpc.Reply, error) {
	var a msg.AllowedTargets
	if err := msgpack.Unmarshal(req.Args, &a); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "undecodable %s args: %v", req.Op, err)
	}
	if err := h.verify(call, a.Grant, h.now()); err != nil {
		return rpc.Reply{}, err
	}
	ts, truncated := h.Policy.Targets(a.Grant.User, msg.MaxTargets)
	rep := msg.AllowedTargetsReply{Targets: make([]msg.Target, 0, len(ts)), Truncated: truncated}
	for _, t := range ts {
		rep.Targets = append(rep.Targets, msg.Target{User: t.Account, Machine: t.Machine, Pattern: t.Pattern()})
	}
	h.log().Info("policy: allowed targets", "user", a.Grant.User, "targets", len(rep.Targets), "truncated", truncated)
	return rpc.Reply{Body: rep}, nil
}

// auditScope serves msg.OpAuditScope on both protocols: the machines the
// grant's user may audit. The grant is verified as for every op, so a
// forged, expired or revoked grant audits nothing.
func (h *Handler) auditScope(call *rpc.Call, req msg.Request) (rpc.Reply, error) {
	var a msg.AuditScope
	if err := msgpack.Unmarshal(req.Args, &a); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "undecodable %s args: %v", req.Op, err)
	}
	if err := h.verify(call, a.Grant, h.now()); err != nil {
		return rpc.Reply{}, err
	}
	machines, rules := h.Policy.AuditScope(a.Grant.User)
	if machines == nil {
		machines = []string{}
	}
	h.log().Info("policy: audit scope", "user", a.Grant.User, "machines", machines, "rules", rules)
	return rpc.Reply{Body: msg.AuditScopeReply{Machines: machines, Rules: rules}}, nil
}

// create serves msg.OpCreateShellSession: check the grant, decide, and on
// allow get the shell from the shell helper and pass its pty master on.
func (h *Handler) create(ctx context.Context, call *rpc.Call, req msg.Request) (rpc.Reply, error) {
	var a msg.CreateShellSession
	if err := msgpack.Unmarshal(req.Args, &a); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "undecodable %s args: %v", req.Op, err)
	}
	now := h.now()
	if err := h.verify(call, a.Grant, now, "unix_user", a.User, "machine", a.Machine); err != nil {
		return rpc.Reply{}, err
	}
	if err := validate(a); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "%v", err)
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
		return rpc.Reply{}, rpc.Errorf(msg.CodeDenied, "%s", d.Reason)
	}

	env, dropped := FilterEnv(a.Env)
	if dropped > 0 {
		log.Info("policy: dropped environment entries", "dropped", dropped)
	}
	open, err := msgpack.Marshal(msg.OpenShell{Machine: a.Machine, User: a.User, Args: a.Args, Env: env, Requester: a.Grant.User, Record: d.Rule.Record})
	if err != nil {
		return rpc.Reply{}, fmt.Errorf("policy: encode open-shell: %w", err)
	}
	var rep msg.OpenShellReply
	fds, err := h.Shell.Call(ctx, msg.Request{Op: msg.OpOpenShell, Args: open}, nil, &rep)
	if err != nil {
		log.Warn("policy: shell helper failed", "err", err)
		var re *rpc.RemoteError
		if errors.As(err, &re) && re.Code == msg.CodeFailed {
			return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "%s", re.Msg)
		}
		return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "the shell could not be opened; see the policy helper's log")
	}
	if len(fds) != 1 {
		for _, f := range fds {
			f.Close()
		}
		log.Warn("policy: shell helper replied without a pty", "fds", len(fds))
		return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "the shell could not be opened; see the policy helper's log")
	}
	log.Info("policy: session created", "session", rep.SessionID, "pid", rep.PID, "rule", rule)
	return rpc.Reply{
		Body: msg.CreateShellSessionReply{
			Session: msg.SessionInfo{
				ID:       rep.SessionID,
				Owner:    a.Grant.User,
				UnixUser: a.User,
				Machine:  a.Machine,
				Created:  now.UnixMilli(),
				Sharing:  msg.SharePrivate,
				PID:      rep.PID,
			},
			Rule: rule,
		},
		FDs: fds,
	}, nil
}

func validate(a msg.CreateShellSession) error {
	if !names.UnixUser(a.User) {
		return fmt.Errorf("invalid unix user name %q", a.User)
	}
	if !names.Machine(a.Machine) {
		return fmt.Errorf("invalid machine name %q", a.Machine)
	}
	if len(a.Args) > MaxArgs {
		return fmt.Errorf("%d args, at most %d", len(a.Args), MaxArgs)
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

// HandlePtyStore serves "ptystore to policy": msg.OpCheckSessions. The
// route's allowlist (ptystore's uid or group, from the kernel's
// credentials) is who may ask; the entries' users are ptystore's record
// of who owns and who attaches, which no one else can reach this op to
// claim.
func (h *Handler) HandlePtyStore(ctx context.Context, call *rpc.Call) (rpc.Reply, error) {
	var req msg.Request
	if err := call.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	call.Label = req.Op
	if req.Op == msg.OpAuditScope {
		return h.auditScope(call, req)
	}
	if req.Op != msg.OpCheckSessions {
		call.Label = "unknown"
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
	}
	var a msg.CheckSessions
	if err := msgpack.Unmarshal(req.Args, &a); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "undecodable %s args: %v", req.Op, err)
	}
	if len(a.Sessions) > msg.MaxCheckSessions {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "%d sessions, at most %d", len(a.Sessions), msg.MaxCheckSessions)
	}
	for i, s := range a.Sessions {
		if !names.SluiceUser(s.User) || !names.UnixUser(s.UnixUser) || !names.Machine(s.Machine) {
			return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "session %d: invalid user, unix user or machine", i)
		}
	}
	if a.Grant != nil {
		if err := h.verify(call, *a.Grant, h.now()); err != nil {
			return rpc.Reply{}, err
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
	return rpc.Reply{Body: rep}, nil
}

// HandleRecord serves "record to policy": msg.OpCheckAudit, the
// recording helper asking, for an auditor's grant it was handed by the
// frontend, whether and of which machines they may play recordings. The
// route's allowlist (the recording helper's uid or group) is who may
// ask; the grant is verified here again, so a recording helper given a
// forged, expired or revoked grant gets bad-grant, never a scope.
func (h *Handler) HandleRecord(ctx context.Context, call *rpc.Call) (rpc.Reply, error) {
	var req msg.Request
	if err := call.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	call.Label = req.Op
	if req.Op != msg.OpCheckAudit {
		call.Label = "unknown"
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
	}
	var a msg.CheckAudit
	if err := msgpack.Unmarshal(req.Args, &a); err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "undecodable %s args: %v", req.Op, err)
	}
	if err := h.verify(call, a.Grant, h.now()); err != nil {
		return rpc.Reply{}, err
	}
	machines, rules := h.Policy.AuditScope(a.Grant.User)
	rep := msg.CheckAuditReply{Allow: len(machines) > 0, Machines: machines, Rules: rules}
	if !rep.Allow {
		_, rep.Reason = h.Policy.MayAudit(a.Grant.User)
	}
	h.log().Info("policy: check-audit", "user", a.Grant.User, "allow", rep.Allow, "machines", machines, "rules", rules)
	return rpc.Reply{Body: rep}, nil
}
