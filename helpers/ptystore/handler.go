package ptystore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"sluice/internal/grant"
	"sluice/internal/optable"
	"sluice/internal/revoke"
	"sluice/internal/ticket"
	"sluice/msg"
	"sluice/rpc"
)

// Handler serves "web to ptystore" and "admin to ptystore".
type Handler struct {
	Store    *Store
	GrantKey grant.Key
	// Revoked is checked on every call after the MAC (see package revoke);
	// nil: no revocation check.
	Revoked *revoke.Checker
	Now     func() time.Time // nil: time.Now
	// Policy is asked on every attach whether the session may go on, and
	// by Recheck; nil (tests of other parts only) asks no one.
	Policy PolicyChecker
	// Verdicts, if not nil, keeps policy's allows for a short time, keyed
	// by the policy file's identity and the whole question (see
	// VerdictCache).
	Verdicts *VerdictCache
	// Audit is asked on every pty-audit-list and pty-audit-get which
	// machines the grant's user may audit; nil refuses them all.
	Audit AuditChecker

	tokenKey  [32]byte
	recheckMu sync.Mutex
}

// NewHandler returns the handler for a store; share tokens are keyed by a
// key derived from the grant key, so they stay good across restarts.
func NewHandler(st *Store, key grant.Key) *Handler {
	return &Handler{Store: st, GrantKey: key, tokenKey: TokenKey(key)}
}

// errHidden is how a session the caller may not touch is reported: the
// same as one that does not exist, so session ids cannot be probed.
var errHidden = ErrNotFound

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// verify checks a grant with grant.Verifier, as every helper does.
func (h *Handler) verify(g msg.Grant) error {
	v := grant.Verifier{Key: h.GrantKey, Now: h.now}
	if h.Revoked != nil {
		v.Revoked = h.Revoked
	}
	if err := v.Verify(g); err != nil {
		return grant.Refusal(err)
	}
	return nil
}

// Tables is ptystore's whole surface.
//
// "policy to ptystore" (policy's uid or group, from the kernel): put a
// new session's pty master (the one op that takes an fd), with policy's
// ticket for it, before policy hands the fd to anyone.
//
// "web to ptystore" (the frontend's uid, from the kernel): get a held pty master back, list,
// drop and share one's own, report viewers, and, for an auditor, list and
// get sessions on the machines policy lets them audit. Every op but
// pty-viewers verifies the grant in its arguments and acts for the user
// it names only.
//
// "admin to ptystore" (root, the admin group): every session, dropping
// any, and a recheck of all of them against the policy now; the socket's
// peer policy is the whole authorization, and the frontend's ops are
// refused there.
//
// With --fleet-host, "gateway to ptystore" (the relay account) serves the
// web ops the gateway package lists, under a host grant.
func (h *Handler) Tables() []optable.Table {
	const admins = "is not served to admins"
	return []optable.Table{
		{
			Protocol: msg.ProtoWebToPtyStore,
			Ops: []optable.Entry{
				// The frontend no longer puts: a caller that could choose
				// not to would hold shells ptystore cannot end.
				optable.Refused(msg.OpPtyPut, "is policy's (create-shell-session puts the session)"),
				optable.OpFDs(msg.OpPtyGet, 0, 1, h.get),
				optable.Op(msg.OpPtyList, h.list),
				optable.Op(msg.OpPtyDrop, h.drop),
				optable.Op(msg.OpPtyShare, h.share),
				optable.Op(msg.OpPtyViewers, h.viewers),
				optable.Op(msg.OpPtyAuditList, h.auditList),
				optable.OpFDs(msg.OpPtyAuditGet, 0, 1, h.auditGet),
			},
		},
		{
			Protocol: msg.ProtoPolicyToPtyStore,
			Ops: []optable.Entry{
				optable.OpFDs(msg.OpPtyPut, 1, 0, h.put),
			},
		},
		{
			Protocol: msg.ProtoAdminToPtyStore,
			Ops: []optable.Entry{
				optable.Plain(msg.OpPtyList, func(optable.None) (msg.PtyListReply, error) {
					return msg.PtyListReply{Sessions: h.Store.List(nil)}, nil
				}),
				optable.Op(msg.OpPtyDrop, func(ctx context.Context, _ *rpc.Call, a msg.PtyDrop) (msg.PtyDropReply, error) {
					return msg.PtyDropReply{}, storeErr("drop", a.ID, h.Store.Drop(ctx, a.ID, nil))
				}),
				optable.Op(msg.OpPtyRecheck, func(ctx context.Context, _ *rpc.Call, _ optable.None) (msg.PtyRecheckReply, error) {
					rep, err := h.Recheck(ctx)
					if err != nil {
						return rep, rpc.Errorf(msg.CodeFailed, "%v", err)
					}
					return rep, nil
				}),
				optable.Refused(msg.OpPtyPut, admins),
				optable.Refused(msg.OpPtyGet, admins),
				optable.Refused(msg.OpPtyShare, admins),
				optable.Refused(msg.OpPtyViewers, admins),
				optable.Refused(msg.OpPtyAuditList, admins),
				optable.Refused(msg.OpPtyAuditGet, admins),
			},
		},
	}
}

func (h *Handler) list(_ context.Context, _ *rpc.Call, a msg.PtyList) (msg.PtyListReply, error) {
	if err := h.verify(a.Grant); err != nil {
		return msg.PtyListReply{}, err
	}
	user := a.Grant.User
	return msg.PtyListReply{Sessions: h.Store.List(func(i msg.SessionInfo) bool { return i.Owner == user })}, nil
}

func (h *Handler) drop(ctx context.Context, _ *rpc.Call, a msg.PtyDrop) (msg.PtyDropReply, error) {
	if err := h.verify(a.Grant); err != nil {
		return msg.PtyDropReply{}, err
	}
	err := h.Store.Drop(ctx, a.ID, ownedBy(a.Grant.User))
	return msg.PtyDropReply{}, storeErr("drop", a.ID, err)
}

func (h *Handler) put(ctx context.Context, c *rpc.Call, a msg.PtyPut) (msg.PtyPutReply, []*os.File, error) {
	f := c.FDs[0] // the table let exactly one through
	// A refused put whose fd the ticket vouches for is a shell policy
	// opened and hands no one else until we hold it: it is ended as a drop
	// would end it (closing our copy only hangs it up, which a shell may
	// ignore), so nothing runs that no end or revocation reaches. Any
	// other fd is only closed: nothing says a shell of ours is behind it.
	refuse := func(err error) (msg.PtyPutReply, []*os.File, error) {
		if h.checkTicket(a, f) == nil {
			h.Store.End(ctx, a.Session, f)
		} else {
			f.Close()
		}
		return msg.PtyPutReply{}, nil, err
	}
	if err := h.verify(a.Grant); err != nil {
		return refuse(err)
	}
	if a.Grant.User != a.Session.Owner {
		return refuse(rpc.Errorf(msg.CodeBadGrant, "grant is for %q, session owner is %q", a.Grant.User, a.Session.Owner))
	}
	if l := a.Limits; l != nil && (l.Idle < 0 || l.Detached < 0 || l.Max < 0) {
		return refuse(rpc.Errorf(rpc.CodeBadRequest, "put %s: negative limits %+v", a.Session.ID, *l))
	}
	// The session's info is policy's word, not the caller's: the ticket
	// policy gave with the fd must match the info and what the kernel says
	// the fd is, or a shell could be put under a target policy never
	// allowed and escape every recheck.
	if err := h.checkTicket(a, f); err != nil {
		f.Close()
		h.Store.log.Warn("ptystore: put refused", "id", a.Session.ID, "owner", a.Session.Owner,
			"unix_user", a.Session.UnixUser, "machine", a.Session.Machine, "pid", c.Peer.PID, "err", err)
		return msg.PtyPutReply{}, nil, rpc.Errorf(rpc.CodeBadRequest, "put %s: %v", a.Session.ID, err)
	}
	keep, err := dupFile(f, "put:"+a.Session.ID)
	if err != nil {
		return refuse(storeErr("put", a.Session.ID, err))
	}
	info, err := h.Store.Put(a.Session, f) // closes f on error
	if err != nil {
		h.Store.End(ctx, a.Session, keep)
		return msg.PtyPutReply{}, nil, storeErr("put", a.Session.ID, err)
	}
	keep.Close()
	// The session's limits, from policy: the maximum length and detached
	// limit are ptystore's to enforce, so they must not come from the
	// frontend. Only policy reaches put ("policy to ptystore"), and it
	// sends them along; asking it back would need a second policy
	// instance while the caller's waits on us (see msg.PtyPut).
	if a.Limits != nil {
		h.Store.SetLimits(info.ID, *a.Limits)
		return msg.PtyPutReply{Session: info, Limits: *a.Limits}, nil, nil
	}
	limits, err := h.checkAttach(ctx, a.Grant, info, msg.ModeOwner)
	if err != nil {
		// Kept: its limits are asked for again (EnforceLimits). Taking
		// access away is the recheck's, as on-revoke says, and ending a
		// shell policy just allowed for a hiccup would be worse.
		h.Store.log.Warn("ptystore: session stored without its limits; asking policy again later", "id", info.ID, "err", err)
		return msg.PtyPutReply{Session: info}, nil, nil
	}
	return msg.PtyPutReply{Session: info, Limits: limits}, nil, nil
}

func (h *Handler) checkTicket(a msg.PtyPut, f *os.File) error {
	fd, err := ticket.Identify(f)
	if err != nil {
		return err
	}
	return ticket.Verify(h.GrantKey, a.Session, fd, a.Ticket, h.now())
}

func (h *Handler) get(ctx context.Context, _ *rpc.Call, a msg.PtyGet) (msg.PtyGetReply, []*os.File, error) {
	if err := h.verify(a.Grant); err != nil {
		return msg.PtyGetReply{}, nil, err
	}
	user := a.Grant.User
	var tokEpoch uint32
	info, mode, f, err := h.Store.Get(a.ID, func(info msg.SessionInfo, epoch uint32) (string, error) {
		if info.Owner == user {
			return msg.ModeOwner, nil
		}
		if len(a.ShareToken) == 0 {
			return "", errHidden
		}
		tokEpoch = epoch // checkToken accepts only the current epoch
		return checkToken(&h.tokenKey, a.ShareToken, info, epoch)
	})
	if err != nil {
		return msg.PtyGetReply{}, nil, storeErr("get", a.ID, err)
	}
	limits, err := h.checkAttach(ctx, a.Grant, info, mode)
	if err != nil {
		f.Close()
		return msg.PtyGetReply{}, nil, err
	}
	h.Store.Viewers([]string{info.ID}, nil) // an attach is a viewer
	if mode != msg.ModeOwner {
		h.Store.log.Info("ptystore: shared session handed out", "id", a.ID, "owner", info.Owner, "viewer", user, "mode", mode)
	}
	if mode == msg.ModeOwner {
		tokEpoch = 0
	}
	return msg.PtyGetReply{Session: info, Mode: mode, Epoch: tokEpoch, Limits: limits}, []*os.File{f}, nil
}

func (h *Handler) share(_ context.Context, _ *rpc.Call, a msg.PtyShare) (msg.PtyShareReply, error) {
	if err := h.verify(a.Grant); err != nil {
		return msg.PtyShareReply{}, err
	}
	info, epoch, err := h.Store.Share(a.ID, a.Mode, ownedBy(a.Grant.User))
	if err != nil {
		return msg.PtyShareReply{}, storeErr("share", a.ID, err)
	}
	if info.Sharing == msg.SharePrivate {
		return msg.PtyShareReply{Epoch: epoch}, nil
	}
	tok, err := makeToken(&h.tokenKey, info, epoch)
	if err != nil {
		return msg.PtyShareReply{}, fmt.Errorf("ptystore: share %s: %w", a.ID, err)
	}
	return msg.PtyShareReply{Token: tok, Epoch: epoch}, nil
}

// viewers records which sessions the frontend has viewers for (the
// detached limit) and answers which of them the policy detached. It takes
// no grant: see msg.PtyViewers.
func (h *Handler) viewers(_ context.Context, _ *rpc.Call, a msg.PtyViewers) (msg.PtyViewersReply, error) {
	if n := len(a.Attached) + len(a.Left); n > msg.MaxPtyViewers {
		return msg.PtyViewersReply{}, rpc.Errorf(rpc.CodeBadRequest, "%d session ids, at most %d", n, msg.MaxPtyViewers)
	}
	return msg.PtyViewersReply{
		Unknown:  h.Store.Viewers(a.Attached, a.Left),
		Detached: h.Store.Detached(a.Attached),
	}, nil
}

func ownedBy(user string) func(msg.SessionInfo) error {
	return func(info msg.SessionInfo) error {
		if info.Owner != user {
			return errHidden
		}
		return nil
	}
}

// storeErr maps store errors to the codes a caller can act on; anything
// else is internal and only logged.
func storeErr(op, id string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return rpc.Errorf(msg.CodeNotFound, "no session %q", id)
	case errors.Is(err, ErrBadToken):
		return rpc.Errorf(msg.CodeBadGrant, "%v", err)
	case errors.Is(err, ErrNotPTY), errors.Is(err, ErrInvalid), errors.Is(err, ErrExists):
		return rpc.Errorf(rpc.CodeBadRequest, "%s %s: %v", op, id, err)
	case errors.Is(err, ErrUserFull):
		return rpc.Errorf(msg.CodeDenied, "too many sessions: %v", err)
	case errors.Is(err, ErrFull), errors.Is(err, ErrEnding):
		return rpc.Errorf(msg.CodeBusy, "%v", err)
	case errors.Is(err, ErrHangup):
		return rpc.Errorf(msg.CodeFailed, "%s %s: the shell may still be running, the session is kept: %v", op, id, err)
	}
	return fmt.Errorf("ptystore: %s %s: %w", op, id, err)
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
