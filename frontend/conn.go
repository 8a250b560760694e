package frontend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
	"sluice/msg"
	"sluice/rpc"
)

// Control messages are JSON text frames {"t": TYPE, ...}; pty bytes are
// binary frames. See docs/frontend.md.
type inMsg struct {
	T          string          `json:"t"`
	Token      string          `json:"token,omitempty"`
	Credential json.RawMessage `json:"credential,omitempty"`
	Assertion  json.RawMessage `json:"assertion,omitempty"`
	ID         string          `json:"id,omitempty"`
	Share      string          `json:"share,omitempty"` // base64url share token
	Machine    string          `json:"machine,omitempty"`
	User       string          `json:"user,omitempty"`
	Mode       string          `json:"mode,omitempty"`
	Cols       uint16          `json:"cols,omitempty"`
	Rows       uint16          `json:"rows,omitempty"`
	N          int64           `json:"n,omitempty"`
	A          int64           `json:"a,omitempty"` // attachment serial an ack is for
}

// Session is a session as the page lists it.
type Session struct {
	ID       string           `json:"id"`
	Owner    string           `json:"owner"`
	UnixUser string           `json:"unix_user"`
	Machine  string           `json:"machine"`
	Created  int64            `json:"created"`
	Sharing  string           `json:"sharing"`
	Viewers  []hub.ViewerInfo `json:"viewers"`
}

type outMsg map[string]any

// Error codes of the frontend's own on top of msg's.
const codeSignIn = "sign-in" // the op needs a signed-in connection

type conn struct {
	s      *Server
	ws     *websocket.Conn
	remote string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	wmu sync.Mutex // one writer at a time, as gorilla requires

	// Only the reader goroutine touches these.
	grant     *msg.Grant
	regToken  string
	regState  []byte
	loginSt   []byte
	att       *attachment
	serial    int64
	lastRefus time.Time
}

type attachment struct {
	serial int64
	id     string
	v      *hub.Viewer
	cancel context.CancelFunc
	done   chan struct{}
}

func newConn(s *Server, ws *websocket.Conn, remote string) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{s: s, ws: ws, remote: remote, log: s.log.With("remote", remote), ctx: ctx, cancel: cancel}
}

func (c *conn) run() {
	defer func() {
		c.detach()
		c.cancel()
		c.ws.Close()
	}()
	c.ws.SetReadLimit(c.s.cfg.MaxMessage)
	c.send(outMsg{"t": "hello", "version": 1})
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		switch typ {
		case websocket.BinaryMessage:
			c.input(data)
		case websocket.TextMessage:
			var m inMsg
			if err := json.Unmarshal(data, &m); err != nil {
				c.fail("", msg.CodeBadRequest, "undecodable control message")
				continue
			}
			c.handle(m)
		}
	}
}

func (c *conn) write(typ int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	err := c.ws.WriteMessage(typ, b)
	if err != nil {
		// A client that cannot take a frame in time is gone; closing
		// makes the reader return and everything unwind.
		c.ws.Close()
	}
	return err
}

func (c *conn) send(m outMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("frontend: encode %v: %w", m["t"], err)
	}
	return c.write(websocket.TextMessage, b)
}

func (c *conn) fail(op, code, text string) {
	c.send(outMsg{"t": "error", "op": op, "code": code, "message": text})
}

// failErr reports a helper's error: its code and text when it is one the
// user can act on, a generic line otherwise (details stay in the log).
func (c *conn) failErr(op string, err error) {
	code := rpc.CodeOf(err)
	var re *rpc.RemoteError
	switch code {
	case msg.CodeDenied, msg.CodeFailed, msg.CodeBadGrant, msg.CodeNotFound, msg.CodeBadRequest, msg.CodeBusy, msg.CodeForbidden:
		text := err.Error()
		if errors.As(err, &re) {
			text = re.Msg
		}
		c.log.Info("refused", "op", op, "code", code, "err", err)
		c.fail(op, code, text)
	default:
		c.log.Error("helper call failed", "op", op, "err", err)
		c.fail(op, msg.CodeInternal, "the server could not do that; see its log")
	}
}

func (c *conn) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, 30*time.Second)
}

// signedIn returns the connection's grant, or reports that the op needs
// one. An expired grant is forgotten.
func (c *conn) signedIn(op string) *msg.Grant {
	if c.grant != nil && time.Now().UnixMilli() >= c.grant.Expires {
		c.grant = nil
	}
	if c.grant == nil {
		c.fail(op, codeSignIn, "sign in first")
	}
	return c.grant
}

func (c *conn) handle(m inMsg) {
	switch m.T {
	case "ack":
		if a := c.att; a != nil && a.serial == m.A {
			a.v.Ack(m.N)
		}
	case "resize":
		if a := c.att; a != nil && a.v.Mode() != hub.ModeReadOnly {
			if err := a.v.Resize(m.Cols, m.Rows); err != nil {
				c.fail(m.T, msg.CodeBadRequest, err.Error())
			}
		}
	case "register-begin":
		c.registerBegin(m)
	case "register-finish":
		c.registerFinish(m)
	case "login-begin":
		c.loginBegin(m)
	case "login-finish":
		c.loginFinish(m)
	case "list":
		c.list(m)
	case "create":
		c.create(m)
	case "attach":
		c.attachOp(m)
	case "detach":
		c.detach()
		c.send(outMsg{"t": "detached"})
	case "share":
		c.share(m)
	case "end":
		c.end(m)
	default:
		c.fail(m.T, msg.CodeBadRequest, "unknown message type")
	}
}

func (c *conn) registerBegin(m inMsg) {
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.RegisterBegin(ctx, msg.RegisterBegin{Token: m.Token})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	c.regToken, c.regState = m.Token, rep.State
	c.send(outMsg{"t": "register-options", "user": rep.User, "options": json.RawMessage(rep.Options)})
}

func (c *conn) registerFinish(m inMsg) {
	if c.regState == nil {
		c.fail(m.T, msg.CodeBadRequest, "no registration in progress")
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.RegisterFinish(ctx, msg.RegisterFinish{Token: c.regToken, State: c.regState, Credential: m.Credential})
	c.regToken, c.regState = "", nil
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	c.log.Info("passkey registered", "user", rep.User)
	c.send(outMsg{"t": "registered", "user": rep.User})
}

func (c *conn) loginBegin(m inMsg) {
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.LoginBegin(ctx, msg.LoginBegin{})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	c.loginSt = rep.State
	c.send(outMsg{"t": "login-options", "options": json.RawMessage(rep.Options)})
}

func (c *conn) loginFinish(m inMsg) {
	if c.loginSt == nil {
		c.fail(m.T, msg.CodeBadRequest, "no sign-in in progress")
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.LoginFinish(ctx, msg.LoginFinish{State: c.loginSt, Assertion: m.Assertion})
	c.loginSt = nil
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	g := rep.Grant
	c.grant = &g
	c.log = c.s.log.With("remote", c.remote, "user", g.User)
	c.log.Info("signed in")
	c.send(outMsg{"t": "signed-in", "user": g.User, "expires": g.Expires})
}

func (c *conn) list(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.PtyList(ctx, msg.PtyList{Grant: *g})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	out := make([]Session, 0, len(rep.Sessions))
	for _, si := range rep.Sessions {
		out = append(out, c.describe(si))
	}
	c.send(outMsg{"t": "sessions", "sessions": out})
}

func (c *conn) describe(si msg.SessionInfo) Session {
	v := []hub.ViewerInfo{}
	if hs := c.s.hub.Get(si.ID); hs != nil {
		v = hs.Viewers()
	}
	return Session{ID: si.ID, Owner: si.Owner, UnixUser: si.UnixUser, Machine: si.Machine, Created: si.Created, Sharing: si.Sharing, Viewers: v}
}

func (c *conn) create(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	machine := m.Machine
	if machine == "" {
		machine = msg.HostMachine
	}
	user := m.User
	if user == "" {
		user = g.User
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, pty, err := c.s.cfg.Backend.CreateShellSession(ctx, msg.CreateShellSession{Machine: machine, User: user, Grant: *g})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	info := rep.Session
	if info.Owner == "" {
		info.Owner = g.User
	}
	// ptystore keeps the session alive across frontend restarts; without
	// it the session would die with us, so failing here ends it.
	put, err := c.s.cfg.Backend.PtyPut(ctx, msg.PtyPut{Grant: *g, Session: info}, pty)
	if err != nil {
		pty.Close()
		c.failErr(m.T, err)
		return
	}
	c.log.Info("session created", "session", info.ID, "machine", machine, "unix_user", user, "rule", rep.Rule)
	c.attach(m.T, put.Session, hub.ModeOwner, pty, m.Cols, m.Rows)
}

func (c *conn) attachOp(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	var tok []byte
	if m.Share != "" {
		var err error
		if tok, err = base64.RawURLEncoding.DecodeString(m.Share); err != nil {
			c.fail(m.T, msg.CodeBadRequest, "share token is not base64url")
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
	c.attach(m.T, rep.Session, rep.Mode, pty, m.Cols, m.Rows)
}

// attach makes this connection a viewer of the session whose pty (a
// master the hub takes over) it just got, and starts its sender.
func (c *conn) attach(op string, info msg.SessionInfo, mode string, pty *os.File, cols, rows uint16) {
	c.detach()
	hs, err := c.s.hub.Adopt(info.ID, pty)
	if err != nil {
		c.log.Error("adopt", "session", info.ID, "err", err)
		c.fail(op, msg.CodeInternal, "could not stream the session")
		return
	}
	switch mode {
	case msg.ModeOwner, msg.ShareReadOnly, msg.ShareReadWrite:
	default:
		mode = msg.ShareReadOnly // an unknown mode gets the least
	}
	v := hs.Attach(c.grantUser(), mode)
	if cols > 0 && rows > 0 && mode != msg.ShareReadOnly {
		v.Resize(cols, rows)
	}
	c.serial++
	ctx, cancel := context.WithCancel(c.ctx)
	a := &attachment{serial: c.serial, id: info.ID, v: v, cancel: cancel, done: make(chan struct{})}
	c.att = a
	c.send(outMsg{"t": "attached", "a": a.serial, "session": c.describe(info), "mode": mode, "window": c.s.hub.Window()})
	go c.pump(ctx, a)
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
	a.cancel()
	<-a.done
}

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pump sends the attachment's output. It takes a frame buffer only while
// there is something to send.
func (c *conn) pump(ctx context.Context, a *attachment) {
	defer close(a.done)
	for {
		if err := a.v.Wait(ctx); err != nil {
			return
		}
		bp := frameBufs.Get().(*[]byte)
		ev, err := a.v.Next(ctx, *bp)
		if err == nil && ev.Skipped > 0 {
			err = c.send(outMsg{"t": "skipped", "a": a.serial, "bytes": ev.Skipped})
		}
		if err == nil && ev.N > 0 {
			err = c.write(websocket.BinaryMessage, (*bp)[:ev.N])
		}
		frameBufs.Put(bp)
		if err == nil && ev.Viewers {
			if hs := c.s.hub.Get(a.id); hs != nil {
				err = c.send(outMsg{"t": "viewers", "a": a.serial, "viewers": hs.Viewers()})
			}
		}
		if err == nil && ev.Exited {
			c.send(outMsg{"t": "exit", "a": a.serial, "id": a.id})
			return
		}
		if err != nil {
			return
		}
	}
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
	case errors.Is(err, hub.ErrReadOnly):
		c.fail("input", msg.CodeForbidden, "this session is shared with you read-only")
	case errors.Is(err, hub.ErrInputFull):
		c.fail("input", msg.CodeBusy, "the shell is not reading its input; keystrokes dropped")
	default:
		c.log.Info("input", "session", a.id, "err", err)
		c.fail("input", msg.CodeFailed, "the session is not taking input")
	}
}

func (c *conn) share(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	switch m.Mode {
	case msg.SharePrivate, msg.ShareReadOnly, msg.ShareReadWrite:
	default:
		c.fail(m.T, msg.CodeBadRequest, "mode is private, read-only or read-write")
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.PtyShare(ctx, msg.PtyShare{Grant: *g, ID: m.ID, Mode: m.Mode})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	out := outMsg{"t": "shared", "id": m.ID, "mode": m.Mode}
	if len(rep.Token) > 0 {
		out["token"] = base64.RawURLEncoding.EncodeToString(rep.Token)
	}
	c.send(out)
}

func (c *conn) end(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	if err := c.s.cfg.Backend.PtyDrop(ctx, msg.PtyDrop{Grant: *g, ID: m.ID}); err != nil {
		c.failErr(m.T, err)
		return
	}
	// ptystore has hung the shell up; our copy of the master goes too, so
	// every viewer sees the end.
	if hs := c.s.hub.Get(m.ID); hs != nil {
		hs.Close()
	}
	c.send(outMsg{"t": "ended", "id": m.ID})
}
