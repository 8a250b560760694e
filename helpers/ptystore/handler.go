package ptystore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"sluice/internal/grant"
	"sluice/internal/revoke"
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

func (h *Handler) verify(g msg.Grant) error {
	if err := grant.Verify(h.GrantKey, g, h.now()); err != nil {
		return rpc.Errorf(msg.CodeBadGrant, "%v", err)
	}
	if h.Revoked != nil {
		if err := h.Revoked.Check(g); err != nil {
			return rpc.Errorf(msg.CodeBadGrant, "%v", err)
		}
	}
	return nil
}

func decodeArgs(req msg.Request, v any) error {
	c := rpc.Call{Body: req.Args}
	return c.Decode(v)
}

// Web serves the frontend: put, get, list, drop and share, each on behalf
// of the user a verified grant names.
func (h *Handler) Web(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	var req msg.Request
	if err := c.Decode(&req); err != nil {
		closeAll(c.FDs)
		return rpc.Reply{}, err
	}
	c.Label = req.Op
	if req.Op != msg.OpPtyPut && len(c.FDs) > 0 {
		closeAll(c.FDs)
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "%s takes no fds, got %d", req.Op, len(c.FDs))
	}
	switch req.Op {
	case msg.OpPtyPut:
		return h.put(ctx, req, c.FDs)
	case msg.OpPtyGet:
		return h.get(ctx, req)
	case msg.OpPtyList:
		var a msg.PtyList
		if err := decodeArgs(req, &a); err != nil {
			return rpc.Reply{}, err
		}
		if err := h.verify(a.Grant); err != nil {
			return rpc.Reply{}, err
		}
		user := a.Grant.User
		return rpc.Reply{Body: msg.PtyListReply{Sessions: h.Store.List(func(i msg.SessionInfo) bool { return i.Owner == user })}}, nil
	case msg.OpPtyDrop:
		var a msg.PtyDrop
		if err := decodeArgs(req, &a); err != nil {
			return rpc.Reply{}, err
		}
		if err := h.verify(a.Grant); err != nil {
			return rpc.Reply{}, err
		}
		err := h.Store.Drop(ctx, a.ID, ownedBy(a.Grant.User))
		return rpc.Reply{Body: msg.PtyDropReply{}}, storeErr("drop", a.ID, err)
	case msg.OpPtyShare:
		return h.share(req)
	case msg.OpPtyViewers:
		return h.viewers(req)
	case msg.OpPtyAuditList:
		return h.auditList(ctx, req)
	case msg.OpPtyAuditGet:
		return h.auditGet(ctx, req)
	}
	return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
}

// Admin serves sluicectl: every session, and dropping any of them. The
// socket's peer policy (root, the admin group) is the whole authorization.
func (h *Handler) Admin(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	closeAll(c.FDs)
	var req msg.Request
	if err := c.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	c.Label = req.Op
	switch req.Op {
	case msg.OpPtyList:
		return rpc.Reply{Body: msg.PtyListReply{Sessions: h.Store.List(nil)}}, nil
	case msg.OpPtyDrop:
		var a msg.PtyDrop
		if err := decodeArgs(req, &a); err != nil {
			return rpc.Reply{}, err
		}
		err := h.Store.Drop(ctx, a.ID, nil)
		return rpc.Reply{Body: msg.PtyDropReply{}}, storeErr("drop", a.ID, err)
	case msg.OpPtyRecheck:
		rep, err := h.Recheck(ctx)
		if err != nil {
			return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "%v", err)
		}
		return rpc.Reply{Body: rep}, nil
	case msg.OpPtyPut, msg.OpPtyGet, msg.OpPtyShare, msg.OpPtyViewers, msg.OpPtyAuditList, msg.OpPtyAuditGet:
		return rpc.Reply{}, rpc.Errorf(msg.CodeForbidden, "%s is not served to admins", req.Op)
	}
	return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
}

func (h *Handler) put(ctx context.Context, req msg.Request, fds []*os.File) (rpc.Reply, error) {
	if len(fds) != 1 {
		closeAll(fds)
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "put takes exactly one fd, got %d", len(fds))
	}
	f := fds[0]
	var a msg.PtyPut
	if err := decodeArgs(req, &a); err != nil {
		f.Close()
		return rpc.Reply{}, err
	}
	if err := h.verify(a.Grant); err != nil {
		f.Close()
		return rpc.Reply{}, err
	}
	if a.Grant.User != a.Session.Owner {
		f.Close()
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadGrant, "grant is for %q, session owner is %q", a.Grant.User, a.Session.Owner)
	}
	info, err := h.Store.Put(a.Session, f) // closes f on error
	if err != nil {
		return rpc.Reply{}, storeErr("put", a.Session.ID, err)
	}
	// The session's limits, from policy: the maximum length and detached
	// limit are ptystore's to enforce, so they must not come from the
	// frontend.
	limits, err := h.checkAttach(ctx, a.Grant, info, msg.ModeOwner)
	if err != nil {
		// Kept: its limits are asked for again (EnforceLimits). Taking
		// access away is the recheck's, as on-revoke says, and ending a
		// shell policy just allowed for a hiccup would be worse.
		h.Store.log.Warn("ptystore: session stored without its limits; asking policy again later", "id", info.ID, "err", err)
		return rpc.Reply{Body: msg.PtyPutReply{Session: info}}, nil
	}
	return rpc.Reply{Body: msg.PtyPutReply{Session: info, Limits: limits}}, nil
}

func (h *Handler) get(ctx context.Context, req msg.Request) (rpc.Reply, error) {
	var a msg.PtyGet
	if err := decodeArgs(req, &a); err != nil {
		return rpc.Reply{}, err
	}
	if err := h.verify(a.Grant); err != nil {
		return rpc.Reply{}, err
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
		return rpc.Reply{}, storeErr("get", a.ID, err)
	}
	limits, err := h.checkAttach(ctx, a.Grant, info, mode)
	if err != nil {
		f.Close()
		return rpc.Reply{}, err
	}
	h.Store.Viewers([]string{info.ID}, nil) // an attach is a viewer
	if mode != msg.ModeOwner {
		h.Store.log.Info("ptystore: shared session handed out", "id", a.ID, "owner", info.Owner, "viewer", user, "mode", mode)
	}
	if mode == msg.ModeOwner {
		tokEpoch = 0
	}
	return rpc.Reply{Body: msg.PtyGetReply{Session: info, Mode: mode, Epoch: tokEpoch, Limits: limits}, FDs: []*os.File{f}}, nil
}

func (h *Handler) share(req msg.Request) (rpc.Reply, error) {
	var a msg.PtyShare
	if err := decodeArgs(req, &a); err != nil {
		return rpc.Reply{}, err
	}
	if err := h.verify(a.Grant); err != nil {
		return rpc.Reply{}, err
	}
	info, epoch, err := h.Store.Share(a.ID, a.Mode, ownedBy(a.Grant.User))
	if err != nil {
		return rpc.Reply{}, storeErr("share", a.ID, err)
	}
	if info.Sharing == msg.SharePrivate {
		return rpc.Reply{Body: msg.PtyShareReply{Epoch: epoch}}, nil
	}
	tok, err := makeToken(&h.tokenKey, info, epoch)
	if err != nil {
		return rpc.Reply{}, fmt.Errorf("ptystore: share %s: %w", a.ID, err)
	}
	return rpc.Reply{Body: msg.PtyShareReply{Token: tok, Epoch: epoch}}, nil
}

// viewers records which sessions the frontend has viewers for (the
// detached limit) and answers which of them the policy detached. It takes
// no grant: see msg.PtyViewers.
func (h *Handler) viewers(req msg.Request) (rpc.Reply, error) {
	var a msg.PtyViewers
	if err := decodeArgs(req, &a); err != nil {
		return rpc.Reply{}, err
	}
	if n := len(a.Attached) + len(a.Left); n > msg.MaxPtyViewers {
		return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "%d session ids, at most %d", n, msg.MaxPtyViewers)
	}
	return rpc.Reply{Body: msg.PtyViewersReply{
		Unknown:  h.Store.Viewers(a.Attached, a.Left),
		Detached: h.Store.Detached(a.Attached),
	}}, nil
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
		return rpc.Errorf(msg.CodeBadRequest, "%s %s: %v", op, id, err)
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
