package frontend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sluice/frontend/admit"
	"sluice/frontend/hub"
	"sluice/msg"
	"sluice/rpc"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
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
	Host       string          `json:"host,omitempty"` // a host of the fleet (fleet.go); "" is this one
	User       string          `json:"user,omitempty"`
	Mode       string          `json:"mode,omitempty"`
	History    bool            `json:"history,omitempty"` // share: viewers see the scrollback from before
	Cols       uint16          `json:"cols,omitempty"`
	Rows       uint16          `json:"rows,omitempty"`
	N          int64           `json:"n,omitempty"`
	A          int64           `json:"a,omitempty"` // attachment serial an ack is for
	// Name labels a new passkey; Last confirms removing the last one.
	Name string `json:"name,omitempty"`
	Last bool   `json:"last,omitempty"`
}

// Session is a session as the page lists it.
type Session struct {
	ID       string           `json:"id"`
	Owner    string           `json:"owner"`
	UnixUser string           `json:"unix_user"`
	Machine  string           `json:"machine"`
	Host     string           `json:"host,omitempty"` // the fleet host holding it; "" is this one
	Created  int64            `json:"created"`
	Sharing  string           `json:"sharing"`
	Viewers  []hub.ViewerInfo `json:"viewers"`
}

// Target is a shell the policy offers, as the new-session form shows it:
// User or Machine "*" (Pattern) stands for any.
type Target struct {
	User    string `json:"user"`
	Machine string `json:"machine"`
	Pattern bool   `json:"pattern"`
}

type outMsg map[string]any

// Error codes of the frontend's own on top of msg's.
const codeSignIn = "sign-in" // the op needs a signed-in connection

type conn struct {
	s      *Server
	ws     *websocket.Conn
	raw    syscall.RawConn // the TCP socket under ws, nil if it has none
	remote string
	source string      // remote's address, what caps and rates count by
	authed atomic.Bool // signed in once: the login grace no longer applies
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	wmu sync.Mutex // one writer at a time, as gorilla requires

	// signedGrant is grant for the revocation watcher's goroutine.
	signedGrant atomic.Pointer[msg.Grant]
	// signOut: the idle limit detached this connection, and its grant
	// goes at the reader's next look (see idleOut).
	signOut atomic.Bool

	// Only the reader goroutine touches these.
	grant     *msg.Grant
	regToken  string
	regState  []byte
	loginSt   []byte
	att       *attachment
	serial    int64
	lastRefus time.Time
}

func newConn(s *Server, ws *websocket.Conn, remote string) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{s: s, ws: ws, remote: remote, source: admit.SourceIP(ws.NetConn().RemoteAddr()),
		log: s.log.With("remote", remote), ctx: ctx, cancel: cancel}
	if sc, ok := ws.NetConn().(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	return c
}

func (c *conn) run() {
	defer func() {
		c.detach()
		c.cancel()
		c.ws.Close()
	}()
	c.ws.SetReadLimit(c.s.cfg.MaxMessage)
	grace := time.AfterFunc(c.s.cfg.LoginGrace, c.graceOver)
	defer grace.Stop()
	c.aside(func() { c.send(c.hello()) })
	for {
		// The buffer is taken once a message has begun: an idle
		// connection, blocked here until its next key or ack, holds none.
		typ, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		bp := msgBufs.Get().(*[]byte)
		data, err := readAll(r, (*bp)[:0])
		if err != nil {
			*bp = data[:0]
			msgBufs.Put(bp)
			return
		}
		switch typ {
		case websocket.BinaryMessage:
			c.input(data)
		case websocket.TextMessage:
			var m inMsg
			if err := json.Unmarshal(data, &m); err != nil {
				c.fail("", rpc.CodeBadRequest, "undecodable control message")
				break
			}
			if m.T == "ack" || m.T == "resize" {
				c.handle(m)
			} else {
				c.aside(func() { c.handle(m) })
			}
		}
		// Neither input nor handle keeps data: the hub copies what it
		// queues, and json copies strings and raw messages.
		*bp = data[:0]
		msgBufs.Put(bp)
	}
}

// msgBufs hold client messages while they are handled, so that keys and
// acks make no garbage (whose collection shows in echo latency).
var msgBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readAll reads the rest of a message into buf, grown as needed up to
// the read limit.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (c *conn) write(typ int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(typ, b)
}

func (c *conn) writeLocked(typ int, b []byte) error {
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
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendLocked(m)
}

func (c *conn) sendLocked(m outMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("frontend: encode %v: %w", m["t"], err)
	}
	return c.writeLocked(websocket.TextMessage, b)
}

func (c *conn) fail(op, code, text string) {
	c.send(outMsg{"t": "error", "op": op, "code": code, "message": text})
}

// failErr reports a helper's error: its code and text when it is one the
// user can act on, which helper went away when one did, a generic line
// otherwise (details stay in the log).
func (c *conn) failErr(op string, err error) {
	code := rpc.CodeOf(err)
	var re *rpc.RemoteError
	var se *StoppedError
	if errors.As(err, &se) {
		c.log.Warn("helper stopped mid-call", "op", op, "helper", se.Helper, "err", err)
		c.fail(op, rpc.CodeInternal, "the "+se.Helper+" helper stopped before answering; try again")
		return
	}
	switch code {
	case msg.CodeDenied, msg.CodeFailed, msg.CodeBadGrant, msg.CodeNotFound, rpc.CodeBadRequest, msg.CodeBusy, rpc.CodeForbidden:
		text := err.Error()
		if errors.As(err, &re) {
			text = re.Msg
		}
		c.log.Info("refused", "op", op, "code", code, "err", err)
		c.fail(op, code, text)
	default:
		c.log.Error("helper call failed", "op", op, "err", err)
		c.fail(op, rpc.CodeInternal, "the server could not do that; see its log")
	}
}

func (c *conn) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, 30*time.Second)
}

// signedIn returns the connection's grant, or reports that the op needs
// one. An expired grant is forgotten.
func (c *conn) signedIn(op string) *msg.Grant {
	if c.signOut.Swap(false) {
		c.grant = nil
	}
	if c.grant != nil && time.Now().UnixMilli() >= c.grant.Expires {
		c.grant = nil
	}
	if c.grant == nil {
		c.fail(op, codeSignIn, "sign in first")
	}
	return c.grant
}

// aside runs f on a goroutine of its own and waits for it. Sign-in,
// creation and the other ceremonies call deep (JSON, msgpack, the helpers'
// rpc) and grew the connection's goroutine to a 16 KiB stack, which it
// kept for its life while parked on the socket with a fraction of it in
// use (no collection shrinks it in a frontend's first megabytes). A
// short-lived goroutine's stack goes back to the runtime for the next
// one; keys, acks and resizes, the messages of a session's life, stay on
// the connection's goroutine.
func (c *conn) aside(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func (c *conn) handle(m inMsg) {
	if (m.Host != "" || m.T == "fleet") && c.fleetOp(m) {
		return
	}
	switch m.T {
	case "ack":
		if a := c.att; a != nil && a.serial == m.A {
			a.v.Ack(m.N)
		}
	case "resize":
		if a := c.att; a != nil && a.v.Mode() != hub.ModeReadOnly {
			if err := a.v.Resize(m.Cols, m.Rows); err != nil {
				c.fail(m.T, rpc.CodeBadRequest, err.Error())
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
	case "targets":
		c.targets(m)
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
		if !c.passkeyOp(m) && !c.auditOp(m) {
			c.fail(m.T, rpc.CodeBadRequest, "unknown message type")
		}
	}
}

// graceOver closes a connection that has not signed in within the login
// grace, so that idle sockets cannot hold the frontend's fds.
func (c *conn) graceOver() {
	if c.authed.Load() {
		return
	}
	c.log.Info("closed: not signed in within the login grace", "grace", c.s.cfg.LoginGrace)
	c.fail("", codeSignIn, "not signed in within "+c.s.cfg.LoginGrace.String()+"; reload the page to try again")
	c.ws.Close()
}

// ceremonyAllowed applies the sign-in rate per source address to the
// ceremonies, each of which costs the auth helper a call.
func (c *conn) ceremonyAllowed(op string) bool {
	if c.s.cfg.SignInRate.Allow(c.source) {
		return true
	}
	c.log.Info("sign-in rate exceeded", "op", op)
	c.fail(op, msg.CodeBusy, "too many sign-in attempts from your address; wait a minute and try again")
	return false
}

func (c *conn) registerBegin(m inMsg) {
	if !c.ceremonyAllowed(m.T) {
		return
	}
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
		c.fail(m.T, rpc.CodeBadRequest, "no registration in progress")
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.RegisterFinish(ctx, msg.RegisterFinish{Token: c.regToken, State: c.regState, Credential: m.Credential, Name: m.Name})
	c.regToken, c.regState = "", nil
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	c.log.Info("passkey registered", "user", rep.User)
	c.send(outMsg{"t": "registered", "user": rep.User})
}

func (c *conn) loginBegin(m inMsg) {
	if !c.ceremonyAllowed(m.T) {
		return
	}
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
		c.fail(m.T, rpc.CodeBadRequest, "no sign-in in progress")
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
	c.signOut.Store(false)
	c.grant = &g
	c.signedGrant.Store(&g)
	c.authed.Store(true)
	if c.s.cfg.Gate != nil {
		c.s.cfg.Gate.SignedIn(c.ws.NetConn())
	}
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

func (c *conn) describe(si msg.SessionInfo) Session { return c.describeOn("", si) }

// describeOn describes a session of host ("" for this one).
func (c *conn) describeOn(host string, si msg.SessionInfo) Session {
	key := si.ID
	if host != "" {
		key = remoteKey(host, si.ID)
	}
	v := []hub.ViewerInfo{}
	if hs := c.s.hub.Get(key); hs != nil {
		v = hs.Viewers()
	}
	return Session{ID: si.ID, Host: host, Owner: si.Owner, UnixUser: si.UnixUser, Machine: si.Machine, Created: si.Created, Sharing: si.Sharing, Viewers: v}
}

// targets answers the new-session form: which shells the policy offers
// this user. It is a hint; create is still decided by the policy.
func (c *conn) targets(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.AllowedTargets(ctx, msg.AllowedTargets{Grant: *g})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	// The policy helper bounds its list; the bound is kept here too, so
	// that what the page gets never depends on the helper keeping it.
	truncated := rep.Truncated || len(rep.Targets) > msg.MaxTargets
	out := make([]Target, 0, min(len(rep.Targets), msg.MaxTargets))
	for _, t := range rep.Targets[:min(len(rep.Targets), msg.MaxTargets)] {
		out = append(out, Target{User: t.User, Machine: t.Machine, Pattern: t.Pattern})
	}
	c.send(outMsg{"t": "targets", "targets": out, "truncated": truncated})
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
	// Policy put the session into ptystore before answering: it lives on
	// across frontend restarts and is ptystore's to end.
	info := rep.Session
	c.s.lim.learned(info.ID, rep.Limits)
	c.log.Info("session created", "session", info.ID, "machine", machine, "unix_user", user, "rule", rep.Rule)
	c.attach(m.T, info, hub.Join{Mode: hub.ModeOwner}, pty, m.Cols, m.Rows)
}

func (c *conn) share(m inMsg) {
	g := c.signedIn(m.T)
	if g == nil {
		return
	}
	switch m.Mode {
	case msg.SharePrivate, msg.ShareReadOnly, msg.ShareReadWrite:
	default:
		c.fail(m.T, rpc.CodeBadRequest, "mode is private, read-only or read-write")
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	rep, err := c.s.cfg.Backend.PtyShare(ctx, msg.PtyShare{Grant: *g, ID: m.ID, Mode: m.Mode})
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	// Applied before the owner's page hears of it (so before anyone can
	// have the new link): viewers already attached lose what the change
	// takes away now, not at their next attach.
	if hs := c.s.hub.Get(m.ID); hs != nil {
		hs.Share(rep.Epoch, m.Mode, m.History)
	}
	c.log.Info("sharing changed", "session", m.ID, "mode", m.Mode, "epoch", rep.Epoch, "history", m.History)
	out := outMsg{"t": "shared", "id": m.ID, "mode": m.Mode, "history": m.History}
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
