package ptystore

import (
	"context"
	"errors"
	"os"

	"sluice/msg"
	"sluice/rpc"
)

// AuditChecker asks the policy helper which machines a grant's user may
// audit ("ptystore to policy", audit-scope). Policy verifies the grant
// (MAC, expiry, revocation) and reads the file at each call.
type AuditChecker func(ctx context.Context, a msg.AuditScope) (msg.AuditScopeReply, error)

// auditScope is the grant's audit scope as policy has it now; a grant
// without one is denied here, so that a page which is not an auditor's
// learns nothing of other users' sessions, not even that there are none.
func (h *Handler) auditScope(ctx context.Context, g msg.Grant) (msg.AuditScopeReply, error) {
	if h.Audit == nil {
		return msg.AuditScopeReply{}, rpc.Errorf(msg.CodeFailed, "no policy helper to ask who may audit")
	}
	rep, err := h.Audit(ctx, msg.AuditScope{Grant: g})
	if err != nil {
		h.Store.log.Warn("ptystore: audit refused: policy could not be asked", "user", g.User, "err", err)
		var re *rpc.RemoteError
		if errors.As(err, &re) && re.Code == msg.CodeBadGrant {
			return rep, rpc.Errorf(msg.CodeBadGrant, "%s", re.Msg)
		}
		return rep, rpc.Errorf(msg.CodeFailed, "the policy could not be asked; try again")
	}
	if len(rep.Machines) == 0 {
		h.Store.log.Info("ptystore: audit refused: no audit rule", "user", g.User)
		return rep, rpc.Errorf(msg.CodeDenied, "%s may not audit sessions", g.User)
	}
	return rep, nil
}

// auditList serves msg.OpPtyAuditList: every live session on a machine the
// grant's user may audit, whoever owns it.
func (h *Handler) auditList(ctx context.Context, _ *rpc.Call, a msg.PtyAuditList) (msg.PtyListReply, error) {
	if err := h.verify(a.Grant); err != nil {
		return msg.PtyListReply{}, err
	}
	scope, err := h.auditScope(ctx, a.Grant)
	if err != nil {
		return msg.PtyListReply{}, err
	}
	list := h.Store.List(func(i msg.SessionInfo) bool { return scope.Covers(i.Machine) })
	h.Store.log.Info("ptystore: audit list", "user", a.Grant.User, "machines", scope.Machines, "sessions", len(list))
	return msg.PtyListReply{Sessions: list}, nil
}

// auditGet serves msg.OpPtyAuditGet: a dup of the master of a session in
// the grant's audit scope, in mode msg.ModeAudit. A session outside the
// scope is not-found, as one that does not exist. The pty master cannot
// be made read-only by the kernel; the frontend refuses the auditor's
// input, as for a read-only share (docs/threat-model.md).
func (h *Handler) auditGet(ctx context.Context, _ *rpc.Call, a msg.PtyAuditGet) (msg.PtyGetReply, []*os.File, error) {
	if err := h.verify(a.Grant); err != nil {
		return msg.PtyGetReply{}, nil, err
	}
	scope, err := h.auditScope(ctx, a.Grant)
	if err != nil {
		return msg.PtyGetReply{}, nil, err
	}
	info, _, f, err := h.Store.Get(a.ID, func(info msg.SessionInfo, _ uint32) (string, error) {
		if !scope.Covers(info.Machine) {
			return "", errHidden
		}
		return msg.ModeAudit, nil
	})
	if err != nil {
		return msg.PtyGetReply{}, nil, storeErr("audit", a.ID, err)
	}
	h.Store.log.Info("ptystore: session handed to an auditor", "id", a.ID, "owner", info.Owner, "auditor", a.Grant.User,
		"machine", info.Machine, "rules", scope.Rules)
	return msg.PtyGetReply{Session: info, Mode: msg.ModeAudit}, []*os.File{f}, nil
}
