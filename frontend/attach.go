package frontend

import (
	"encoding/base64"
	"errors"
	"os"
	"sluice/frontend/hub"
	"sluice/msg"
	"sluice/rpc"
	"time"
)

func (c *conn) attachOp(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	var tok []byte
	if m.Share != "" {
		var err error
		if tok, err = base64.RawURLEncoding.DecodeString(m.Share); err != nil {
			c.fail(m.T, rpc.CodeBadRequest, "share token is not base64url")
			return
		}
	}
	ctx, cancel := c.call()
	defer cancel()
	// Always ask ptystore, even when the hub streams the session already:
	// it decides who may see it and in which mode.
	rep, pty, err := c.s.cfg.Backend.PtyGet(ctx, msg.PtyGet{Grant: *g, ID: m.ID, ShareToken: tok})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	c.s.lim.learned(rep.Session.ID, rep.Limits)
	c.attach(m.T, rep.Session, hub.Join{Mode: rep.Mode, Shared: rep.Mode != msg.ModeOwner, Epoch: rep.Epoch}, pty, m.Cols, m.Rows)
}

// attach makes this connection a viewer of the session whose pty (a
// master the hub takes over) it just got, and starts its sender.
func (c *conn) attach(op string, info msg.SessionInfo, j hub.Join, pty *os.File, cols, rows uint16) {
	c.attachOn(op, "", info, j, pty, cols, rows)
}

// attachOn is attach for a session of host ("" for this one), which the
// hub keys by host and ID.
func (c *conn) attachOn(op, host string, info msg.SessionInfo, j hub.Join, pty *os.File, cols, rows uint16) {
	c.detach()
	key := info.ID
	if host != "" {
		key = remoteKey(host, info.ID)
	}
	hs, err := c.s.hub.Adopt(key, pty)
	if err != nil {
		c.log.Error("adopt", "session", info.ID, "err", err)
		c.fail(op, rpc.CodeInternal, "could not stream the session")
		return
	}
	switch j.Mode {
	case msg.ModeOwner, msg.ShareReadOnly, msg.ShareReadWrite:
	default:
		j.Mode = msg.ShareReadOnly // an unknown mode gets the least
	}
	j.User = c.grantUser()
	c.serial++
	a := &attachment{serial: c.serial, id: key, c: c}
	// Output that arrives before "attached" is out waits: kicks find the
	// sender busy and leave it pending.
	a.send.Lock()
	a.v, err = hs.Join(j, a.kick)
	if err != nil {
		// ptystore said yes, then the owner stopped sharing before we
		// got here: the later word wins.
		a.send.Unlock()
		c.fail(op, msg.CodeBadGrant, "share token invalid or revoked: the owner stopped sharing this session")
		return
	}
	mode := a.v.Mode()
	if cols > 0 && rows > 0 && mode != msg.ShareReadOnly {
		a.v.Resize(cols, rows)
	}
	c.att = a
	c.send(outMsg{"t": "attached", "a": a.serial, "session": c.describeOn(host, info), "mode": mode, "window": c.s.hub.Window()})
	a.send.Unlock()
	a.kick()
}

func (c *conn) grantUser() string {
	if c.grant == nil {
		return ""
	}
	return c.grant.User
}

// detach stops the current attachment and waits for its sender, so that
// no frame of it follows a later "attached".
func (c *conn) detach() {
	a := c.att
	if a == nil {
		return
	}
	c.att = nil
	a.v.Detach()
	a.send.Lock()
	a.stopped = true
	a.send.Unlock()
	if isRemote(a.id) {
		c.remoteGone(a.id)
		return
	}
	c.s.lim.lastViewerGone(a.id)
}

// input types a binary frame into the attached session. Refusals are
// reported at most once a second so a read-only viewer leaning on the
// keyboard does not flood itself with errors.
func (c *conn) input(p []byte) {
	a := c.att
	if a == nil {
		return
	}
	err := a.v.Input(p)
	if err == nil {
		return
	}
	if time.Since(c.lastRefus) < time.Second {
		return
	}
	c.lastRefus = time.Now()
	switch {
	case errors.Is(err, hub.ErrRevoked):
		c.fail("input", rpc.CodeForbidden, "the owner stopped sharing this session")
	case errors.Is(err, hub.ErrDetached):
		c.fail("input", msg.CodeFailed, "not attached to a session")
	case errors.Is(err, hub.ErrReadOnly):
		c.fail("input", rpc.CodeForbidden, "this session is shared with you read-only")
	case errors.Is(err, hub.ErrInputFull):
		c.fail("input", msg.CodeBusy, "the shell is not reading its input; keystrokes dropped")
	default:
		c.log.Info("input", "session", a.id, "err", err)
		c.fail("input", msg.CodeFailed, "the session is not taking input")
	}
}
