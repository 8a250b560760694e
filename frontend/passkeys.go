package frontend

import (
	"context"
	"encoding/base64"
	"encoding/json"

	"sluice/msg"
	"sluice/rpc"
)

// PasskeyBackend is the auth helper's passkey ops on behalf of a grant's
// user. It is apart from Backend so that stand-ins which have no passkeys
// (the benchmarks' local backend) need not grow them; a backend without
// it answers the page's passkey messages with an error.
type PasskeyBackend interface {
	PasskeyList(ctx context.Context, a msg.PasskeyList) (msg.PasskeyListReply, error)
	PasskeyRevoke(ctx context.Context, a msg.PasskeyRevoke) (msg.PasskeyRevokeReply, error)
	PasskeyAdd(ctx context.Context, a msg.PasskeyAdd) (msg.EnrollReply, error)
}

func (h *Helpers) PasskeyList(ctx context.Context, a msg.PasskeyList) (msg.PasskeyListReply, error) {
	r, _, err := ask[msg.PasskeyListReply](ctx, h.auth, msg.OpPasskeyList, a, nil, 0)
	return r, err
}

func (h *Helpers) PasskeyRevoke(ctx context.Context, a msg.PasskeyRevoke) (msg.PasskeyRevokeReply, error) {
	r, _, err := ask[msg.PasskeyRevokeReply](ctx, h.auth, msg.OpPasskeyRevoke, a, nil, 0)
	return r, err
}

func (h *Helpers) PasskeyAdd(ctx context.Context, a msg.PasskeyAdd) (msg.EnrollReply, error) {
	r, _, err := ask[msg.EnrollReply](ctx, h.auth, msg.OpPasskeyAdd, a, nil, 0)
	return r, err
}

// PasskeyView is a passkey as the page lists it.
type PasskeyView struct {
	ID       string `json:"id"` // base64url credential ID
	Name     string `json:"name"`
	Created  int64  `json:"created"`
	LastUsed int64  `json:"last_used"`
	Current  bool   `json:"current"`
}

// passkeyOp handles the page's passkey messages; it reports whether m was
// one. Every call carries the grant this connection signed in with: the
// browser names at most a credential ID and never a user or a grant, so a
// page can only ever act on its own user's passkeys (auth checks the
// grant's MAC and the revocation list again).
func (c *conn) passkeyOp(m inMsg) bool {
	switch m.T {
	case "passkey-list", "passkey-add", "passkey-revoke":
	default:
		return false
	}
	g := c.signedIn(m.T)
	if g == nil {
		return true
	}
	pb, ok := c.s.cfg.Backend.(PasskeyBackend)
	if !ok {
		c.fail(m.T, rpc.CodeInternal, "this server cannot manage passkeys")
		return true
	}
	ctx, cancel := c.call()
	defer cancel()
	switch m.T {
	case "passkey-list":
		c.passkeyList(ctx, pb, *g)
	case "passkey-add":
		c.passkeyAdd(ctx, pb, *g)
	case "passkey-revoke":
		c.passkeyRevoke(ctx, pb, *g, m)
	}
	return true
}

func (c *conn) passkeyList(ctx context.Context, pb PasskeyBackend, g msg.Grant) {
	rep, err := pb.PasskeyList(ctx, msg.PasskeyList{Grant: g})
	if err != nil {
		c.failErr("passkey-list", err)
		return
	}
	out := make([]PasskeyView, 0, len(rep.Passkeys))
	for _, p := range rep.Passkeys {
		out = append(out, PasskeyView{ID: base64.RawURLEncoding.EncodeToString(p.ID), Name: p.Name,
			Created: p.Created, LastUsed: p.LastUsed, Current: p.Current})
	}
	c.send(outMsg{"t": "passkeys", "user": rep.User, "passkeys": out})
}

// passkeyAdd spends a passkey-add token at once on register-begin: the
// token stays in this connection like an enrollment link's would, and the
// page goes on with register-finish as in enrollment.
func (c *conn) passkeyAdd(ctx context.Context, pb PasskeyBackend, g msg.Grant) {
	tok, err := pb.PasskeyAdd(ctx, msg.PasskeyAdd{Grant: g})
	if err != nil {
		c.failErr("passkey-add", err)
		return
	}
	rep, err := c.s.cfg.Backend.RegisterBegin(ctx, msg.RegisterBegin{Token: tok.Token})
	if err != nil {
		c.failErr("passkey-add", err)
		return
	}
	c.regToken, c.regState = tok.Token, rep.State
	c.send(outMsg{"t": "register-options", "user": rep.User, "options": json.RawMessage(rep.Options)})
}

func (c *conn) passkeyRevoke(ctx context.Context, pb PasskeyBackend, g msg.Grant, m inMsg) {
	id, err := base64.RawURLEncoding.DecodeString(m.ID)
	if err != nil || len(id) == 0 {
		c.fail(m.T, rpc.CodeBadRequest, "passkey id is not base64url")
		return
	}
	rep, err := pb.PasskeyRevoke(ctx, msg.PasskeyRevoke{Grant: g, ID: id, Last: m.Last})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	c.log.Info("passkey removed by its user", "credential", m.ID, "remaining", rep.Remaining)
	// Removing the passkey this connection signed in with revokes its
	// grant too: the revocation watcher closes the socket shortly.
	c.send(outMsg{"t": "passkey-revoked", "id": m.ID, "remaining": rep.Remaining})
}
