package frontend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"sluice/frontend/admit"
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

// attachment is this connection's view of one session, and its sender.
// There is no sender goroutine while the session is idle: the hub calls
// kick when there may be output, and whoever kicks sends what is ready
// itself as long as the socket takes it without blocking; only a write
// that could block gets a goroutine, which lives until the output is
// drained. An idle session so costs no goroutine here, and a keystroke's
// echo goes out on the pty reader's goroutine without a hand-off.
type attachment struct {
	serial int64
	id     string
	c      *conn
	v      *hub.Viewer

	send    sync.Mutex  // held by whoever is sending for this attachment
	pending atomic.Bool // kicked since the sender last looked
	stopped bool        // guarded by send: detached, exited or failed
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
	c.send(c.hello())
	for {
		bp := msgBufs.Get().(*[]byte)
		typ, data, err := c.readMessage((*bp)[:0])
		if err != nil {
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
			c.handle(m)
		}
		// Neither input nor handle keeps data: the hub copies what it
		// queues, and json copies strings and raw messages.
		*bp = data[:0]
		msgBufs.Put(bp)
	}
}

// msgBufs hold client messages while they are handled, so that keys and
// acks make no garbage (whose collection shows in echo latency) and an idle
// connection holds no buffer.
var msgBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readMessage reads the next message into buf, grown as needed up to the
// read limit.
func (c *conn) readMessage(buf []byte) (int, []byte, error) {
	typ, r, err := c.ws.NextReader()
	if err != nil {
		return 0, buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return typ, buf, nil
		}
		if err != nil {
			return 0, buf, err
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

// minInline is room kept aside beyond the output itself for the control
// messages that may go with it.
const minInline = 512

// tryWriter takes the write lock if it is free and the socket takes n
// more bytes of output without blocking, and says whether it did.
func (c *conn) tryWriter(n int) bool {
	if c.raw == nil || !c.wmu.TryLock() {
		return false
	}
	if sockRoom(c.raw) >= n+minInline {
		return true
	}
	c.wmu.Unlock()
	return false
}

// sockRoom is how many bytes a write to the TCP socket takes now without
// waiting, from the kernel's own accounting (SO_MEMINFO: bytes queued,
// overhead included, against the send buffer). It halves the free space
// because queued bytes are counted with their buffers' overhead, and
// keeps a frame header's worth aside.
func sockRoom(rc syscall.RawConn) int {
	var mi [unix.SK_MEMINFO_VARS]uint32
	room := 0
	rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mi))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e == 0 {
			room = (int(mi[unix.SK_MEMINFO_SNDBUF])-int(mi[unix.SK_MEMINFO_WMEM_QUEUED]))/2 - 64
		}
	})
	return room
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
	c.s.lim.learned(info.ID, put.Limits)
	c.log.Info("session created", "session", info.ID, "machine", machine, "unix_user", user, "rule", rep.Rule)
	c.attach(m.T, put.Session, hub.Join{Mode: hub.ModeOwner}, pty, m.Cols, m.Rows)
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

const frameSize = 32 << 10

// inlineMax is the most output sent on the goroutine that kicked.
const inlineMax = 4 << 10

var frameBufs = sync.Pool{New: func() any { b := make([]byte, frameSize); return &b }}

// kick is the viewer's ready func: the hub calls it when there may be
// something to send, from the pty reader or from whoever acknowledged,
// attached or detached. It never blocks.
func (a *attachment) kick() {
	a.pending.Store(true)
	for a.pending.Load() && a.send.TryLock() {
		if !a.drain(true) {
			return // a goroutine has the sender now
		}
		a.send.Unlock()
	}
}

// drain sends what is ready; the caller holds a.send. Inline, it sends
// only small output that the socket takes at once; otherwise it hands
// a.send to a new goroutine that carries on, and returns false.
func (a *attachment) drain(inline bool) bool {
	// pending is cleared even once stopped, or kick would spin on it.
	for a.pending.Swap(false) && !a.stopped {
		for !a.stopped {
			ok, n := a.v.Ready()
			if !ok {
				break
			}
			// Inline goes only what is small (an echo, a prompt) and only
			// whole: cutting output to the socket's room would make small
			// frames and small acks, and a burst sends faster from a
			// goroutine of its own while the reader reads on (measured by
			// BenchmarkCat100MB).
			if inline && (n > inlineMax || !a.c.tryWriter(n)) {
				a.pending.Store(true)
				go a.carryOn()
				return false
			}
			limit := frameSize
			if inline {
				limit = min(n, frameSize)
			} else {
				a.c.wmu.Lock()
			}
			a.sendOne(limit)
			a.c.wmu.Unlock()
		}
	}
	return true
}

// carryOn is the sender goroutine; it exists only while output is
// waiting for the socket to take it.
func (a *attachment) carryOn() {
	for {
		a.drain(false)
		a.send.Unlock()
		if !a.pending.Load() || !a.send.TryLock() {
			return
		}
	}
}

// sendOne sends one Poll's worth, at most limit bytes of output, with the
// sender and the write lock held. It takes a frame buffer only now, so an
// idle attachment holds none.
func (a *attachment) sendOne(limit int) {
	c := a.c
	bp := frameBufs.Get().(*[]byte)
	defer frameBufs.Put(bp)
	ev, err := a.v.Poll((*bp)[:limit])
	if err == nil && ev.Skipped > 0 {
		err = c.sendLocked(outMsg{"t": "skipped", "a": a.serial, "bytes": ev.Skipped})
	}
	if err == nil && ev.N > 0 {
		err = c.writeLocked(websocket.BinaryMessage, (*bp)[:ev.N])
	}
	if err == nil && ev.Viewers {
		if hs := c.s.hub.Get(a.id); hs != nil {
			err = c.sendLocked(outMsg{"t": "viewers", "a": a.serial, "viewers": hs.Viewers()})
		}
	}
	if err == nil && ev.Mode != "" {
		err = c.sendLocked(outMsg{"t": "mode", "a": a.serial, "id": a.id, "mode": ev.Mode,
			"message": "the owner made this session read-only"})
	}
	if err == nil && ev.Revoked {
		c.sendLocked(outMsg{"t": "revoked", "a": a.serial, "id": a.id, "message": "the owner stopped sharing this session"})
		a.stopped = true
		return
	}
	if err == nil && ev.Kicked != "" {
		// Signed out before the page hears it: once the message is on the
		// wire the page may send its next op, and the reader must already
		// find the grant gone (the sender can be descheduled between the
		// two for as long as the machine likes).
		c.idleOut()
		c.sendLocked(outMsg{"t": "idle", "a": a.serial, "id": a.id, "message": ev.Kicked})
		a.stopped = true
		return
	}
	if err == nil && ev.Detached != "" {
		c.sendLocked(outMsg{"t": "detached", "a": a.serial, "id": a.id, "message": ev.Detached})
		a.stopped = true
		return
	}
	if err == nil && ev.Exited {
		c.sendLocked(outMsg{"t": "exit", "a": a.serial, "id": a.id})
		a.stopped = true
	}
	if err != nil {
		a.stopped = true
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
