package frontend

import (
	"context"
	"os"

	"sluice/frontend/hub"
	"sluice/msg"
	"sluice/rpc"
)

// AuditBackend is what an auditor's page asks of the helpers: policy's
// audit scope (a hint for the page) and ptystore's audit ops, which ask
// policy themselves. It is apart from Backend, as PasskeyBackend is, so
// stand-ins without helpers need not grow it.
type AuditBackend interface {
	AuditScope(ctx context.Context, a msg.AuditScope) (msg.AuditScopeReply, error)
	PtyAuditList(ctx context.Context, a msg.PtyAuditList) (msg.PtyListReply, error)
	PtyAuditGet(ctx context.Context, a msg.PtyAuditGet) (msg.PtyGetReply, *os.File, error)
}

func (h *Helpers) AuditScope(ctx context.Context, a msg.AuditScope) (msg.AuditScopeReply, error) {
	r, _, err := ask[msg.AuditScopeReply](ctx, h.policy, msg.OpAuditScope, a, nil, 0)
	return r, err
}

func (h *Helpers) PtyAuditList(ctx context.Context, a msg.PtyAuditList) (msg.PtyListReply, error) {
	r, _, err := ask[msg.PtyListReply](ctx, h.ptystore, msg.OpPtyAuditList, a, nil, 0)
	return r, err
}

func (h *Helpers) PtyAuditGet(ctx context.Context, a msg.PtyAuditGet) (msg.PtyGetReply, *os.File, error) {
	return askOne[msg.PtyGetReply](ctx, h.ptystore, msg.OpPtyAuditGet, a)
}

// auditOp handles the page's audit messages; it reports whether m was one.
// Every call carries this connection's grant and nothing else about the
// caller: ptystore and policy decide who may audit what.
func (c *conn) auditOp(m inMsg) bool {
	switch m.T {
	case "audit-scope", "audit-list", "audit-attach", "recordings", "recording":
	default:
		return false
	}
	g := c.signedIn(m.T)
	if g == nil {
		return true
	}
	if m.T == "recordings" || m.T == "recording" {
		c.recordingOp(m, *g)
		return true
	}
	ab, ok := c.s.cfg.Backend.(AuditBackend)
	if !ok {
		c.fail(m.T, msg.CodeFailed, "auditing is not available on this server")
		return true
	}
	ctx, cancel := c.call()
	defer cancel()
	switch m.T {
	case "audit-scope":
		rep, err := ab.AuditScope(ctx, msg.AuditScope{Grant: *g})
		if err != nil {
			c.failErr(m.T, err)
			return true
		}
		machines := rep.Machines[:min(len(rep.Machines), msg.MaxTargets)]
		c.send(outMsg{"t": "audit-scope", "machines": machines})
	case "audit-list":
		rep, err := ab.PtyAuditList(ctx, msg.PtyAuditList{Grant: *g})
		if err != nil {
			c.failErr(m.T, err)
			return true
		}
		out := make([]Session, 0, len(rep.Sessions))
		for _, si := range rep.Sessions {
			out = append(out, c.describe(si))
		}
		c.send(outMsg{"t": "audit-sessions", "sessions": out})
	case "audit-attach":
		rep, pty, err := ab.PtyAuditGet(ctx, msg.PtyAuditGet{Grant: *g, ID: m.ID})
		if err != nil {
			c.failErr(m.T, err)
			return true
		}
		if rep.Mode != msg.ModeAudit {
			// ptystore answers audit-get with nothing else; anything else
			// is a helper out of step, and gets no view at all.
			pty.Close()
			c.log.Error("audit-get answered with another mode", "session", m.ID, "mode", rep.Mode)
			c.fail(m.T, rpc.CodeInternal, "the server could not do that; see its log")
			return true
		}
		c.log.Info("auditor attached", "session", m.ID, "owner", rep.Session.Owner)
		c.attach(m.T, rep.Session, hub.Join{Mode: hub.ModeReadOnly, Auditor: true}, pty, 0, 0)
	}
	return true
}
