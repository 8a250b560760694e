package frontend

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/frontend/hub"
	"sluice/internal/names"
	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

// FleetBackend is what the page's fleet view asks (docs/fleet.md): auth
// for a host grant made from the connection's own grant, and the fleet
// helper for the hosts and for calls and streams to one host. It is apart
// from Backend, as AuditBackend is; Config.Fleet nil means no fleet, and
// then nothing here runs.
type FleetBackend interface {
	HostGrant(ctx context.Context, a msg.HostGrantRequest) (msg.HostGrantReply, error)
	FleetHosts(ctx context.Context) (msg.FleetHostsReply, error)
	// FleetCall carries one non-streaming call to a host's helper and
	// decodes its answer into reply.
	FleetCall(ctx context.Context, a msg.FleetCall, reply any) error
	// FleetOpen creates or attaches a session on a host; the file is a
	// termsock socket (ssh's stdio at its other end), streamed as a
	// recorded local session's socket is: raw output, framed input.
	FleetOpen(ctx context.Context, a msg.FleetCall) (msg.FleetOpenReply, *os.File, error)
}

// FleetHelpers reaches auth (host-grant on "web to auth") and the fleet
// helper ("web to fleet").
type FleetHelpers struct {
	auth, fleet helperClient
}

// FleetCallTimeout bounds one call through the fleet helper: an ssh
// connection, a relay and a host helper are behind it.
const FleetCallTimeout = 30 * time.Second

// Fleet returns the fleet's client, sharing h's auth client.
func (h *Helpers) Fleet() (*FleetHelpers, error) {
	cl, err := suite.Client(msg.Frontend, msg.ProtoWebToFleet)
	if err != nil {
		return nil, fmt.Errorf("frontend: client for %q: %w", msg.ProtoWebToFleet, err)
	}
	cl.Timeout = FleetCallTimeout
	return &FleetHelpers{auth: h.auth, fleet: helperClient{name: msg.Fleet, Client: cl}}, nil
}

func (h *FleetHelpers) HostGrant(ctx context.Context, a msg.HostGrantRequest) (msg.HostGrantReply, error) {
	r, _, err := ask[msg.HostGrantReply](ctx, h.auth, msg.OpHostGrant, a, nil, 0)
	return r, err
}

func (h *FleetHelpers) FleetHosts(ctx context.Context) (msg.FleetHostsReply, error) {
	r, _, err := ask[msg.FleetHostsReply](ctx, h.fleet, msg.OpFleetHosts, msg.FleetHosts{}, nil, 0)
	return r, err
}

func (h *FleetHelpers) FleetCall(ctx context.Context, a msg.FleetCall, reply any) error {
	raw, _, err := ask[msgpack.RawMessage](ctx, h.fleet, msg.OpFleetCall, a, nil, 0)
	if err != nil || reply == nil {
		return err
	}
	// The host helper's reply as it came; decoded as the rpc client would.
	if err := rpc.CheckMsgpack(raw); err != nil {
		return fmt.Errorf("frontend: %s: decode reply into %T: %w", msg.OpFleetCall, reply, err)
	}
	if err := msgpack.Unmarshal(raw, reply); err != nil {
		return fmt.Errorf("frontend: %s: decode reply into %T: %w", msg.OpFleetCall, reply, err)
	}
	return nil
}

func (h *FleetHelpers) FleetOpen(ctx context.Context, a msg.FleetCall) (msg.FleetOpenReply, *os.File, error) {
	return askOne[msg.FleetOpenReply](ctx, h.fleet, msg.OpFleetOpen, a)
}

// FleetHost is one host as the page's fleet view shows it: what its own
// policy offers this user, its sessions of this user, or why neither
// could be had (a denial, an unreachable host).
type FleetHost struct {
	Name      string    `json:"name"`
	Targets   []Target  `json:"targets"`
	Truncated bool      `json:"truncated,omitempty"`
	Sessions  []Session `json:"sessions"`
	Code      string    `json:"code,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// fleetParallel bounds the hosts asked at once for the page's view: each
// costs ssh processes in the fleet helper.
const fleetParallel = 8

// maxRemoteID bounds a session ID a host answers with; the hub keys a
// remote session by host and ID (remoteKey).
const maxRemoteID = 128

// remoteKey is the hub's key of a session on host: host names have no
// "/" (names.Machine) and local IDs are the local ptystore's, so no host
// can name its session so that it lands on a local session or another
// host's, whatever ID it answers with.
func remoteKey(host, id string) string { return host + "/" + id }

// isRemote tells a remote session's hub key from a local session's ID.
func isRemote(key string) bool { return strings.Contains(key, "/") }

func validRemoteID(id string) bool {
	if id == "" || len(id) > maxRemoteID || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if r < 0x21 || r == 0x7f {
			return false
		}
	}
	return true
}

// fleetOp handles the page's fleet messages and reports whether m was
// one: "fleet" (every host's view), and create, attach, share and end
// with a host. With no fleet configured it takes nothing, so the page
// and its messages are what they are without one. Every call carries a
// host grant auth makes from this connection's grant; the page names only
// the host, which is the host's own business to accept.
func (c *conn) fleetOp(m inMsg) bool {
	fb := c.s.cfg.Fleet
	if fb == nil || (m.T != "fleet" && m.Host == "") {
		return false
	}
	switch m.T {
	case "fleet", "create", "attach", "share", "end":
	default:
		c.fail(m.T, rpc.CodeBadRequest, m.T+" is not available for a host")
		return true
	}
	g := c.signedIn(m.T)
	if g == nil {
		return true
	}
	if m.T == "fleet" {
		c.fleetView(fb, *g)
		return true
	}
	if !names.Machine(m.Host) || m.Host == msg.HostMachine {
		c.fail(m.T, rpc.CodeBadRequest, "invalid host name")
		return true
	}
	ctx, cancel := context.WithTimeout(c.ctx, FleetCallTimeout+5*time.Second)
	defer cancel()
	hg, err := fb.HostGrant(ctx, msg.HostGrantRequest{Grant: *g, Host: m.Host})
	if err != nil {
		c.failErr(m.T, err)
		return true
	}
	switch m.T {
	case "create", "attach":
		c.fleetOpen(ctx, fb, m, hg)
	case "share":
		c.fleetShare(ctx, fb, m, hg)
	case "end":
		c.fleetEnd(ctx, fb, m, hg)
	}
	return true
}

// fleetView asks every host, a few at a time, what its policy offers this
// user and which of the user's sessions it holds. A host that fails
// (denies, is down) is shown with its error; the others are unaffected.
func (c *conn) fleetView(fb FleetBackend, g msg.Grant) {
	ctx, cancel := context.WithTimeout(c.ctx, FleetCallTimeout+5*time.Second)
	defer cancel()
	hs, err := fb.FleetHosts(ctx)
	if err != nil {
		c.failErr("fleet", err)
		return
	}
	hosts := hs.Hosts[:min(len(hs.Hosts), msg.MaxTargets)]
	out := make([]FleetHost, len(hosts))
	sem := make(chan struct{}, fleetParallel)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = c.hostView(ctx, fb, g, h.Name)
		}()
	}
	wg.Wait()
	c.send(outMsg{"t": "fleet", "hosts": out})
}

func (c *conn) hostView(ctx context.Context, fb FleetBackend, g msg.Grant, host string) FleetHost {
	v := FleetHost{Name: host, Targets: []Target{}, Sessions: []Session{}}
	fail := func(op string, err error) FleetHost {
		v.Code, v.Error = c.userError(op, err)
		return v
	}
	if !names.Machine(host) || host == msg.HostMachine {
		v.Code, v.Error = rpc.CodeBadRequest, "invalid host name in the fleet's list"
		return v
	}
	hg, err := fb.HostGrant(ctx, msg.HostGrantRequest{Grant: g, Host: host})
	if err != nil {
		return fail("host-grant", err)
	}
	var tg msg.AllowedTargetsReply
	if err := fleetCall(ctx, fb, host, msg.Policy, msg.OpAllowedTargets, msg.AllowedTargets{}, hg, &tg); err != nil {
		return fail(msg.OpAllowedTargets, err)
	}
	v.Truncated = tg.Truncated || len(tg.Targets) > msg.MaxTargets
	for _, t := range tg.Targets[:min(len(tg.Targets), msg.MaxTargets)] {
		v.Targets = append(v.Targets, Target{User: t.User, Machine: t.Machine, Pattern: t.Pattern})
	}
	var l msg.PtyListReply
	if err := fleetCall(ctx, fb, host, msg.PtyStore, msg.OpPtyList, msg.PtyList{}, hg, &l); err != nil {
		return fail(msg.OpPtyList, err)
	}
	for _, si := range l.Sessions[:min(len(l.Sessions), msg.MaxTargets)] {
		if validRemoteID(si.ID) {
			v.Sessions = append(v.Sessions, c.describeOn(host, si))
		}
	}
	return v
}

func fleetCall(ctx context.Context, fb FleetBackend, host, service, op string, args any, hg msg.HostGrantReply, reply any) error {
	raw, err := msgpack.Marshal(args)
	if err != nil {
		return fmt.Errorf("frontend: encode %s: %w", op, err)
	}
	return fb.FleetCall(ctx, msg.FleetCall{Host: host, Service: service, Op: op, Args: raw, HostGrant: hg.HostGrant}, reply)
}

// fleetOpen creates a session on a host, or attaches to one (a share
// token, if any, is the host ptystore's to judge), and streams it as a
// local one under its remote key.
func (c *conn) fleetOpen(ctx context.Context, fb FleetBackend, m inMsg, hg msg.HostGrantReply) {
	a := msg.FleetCall{Host: m.Host, HostGrant: hg.HostGrant, Rows: m.Rows, Cols: m.Cols}
	var args any
	if m.T == "create" {
		machine, user := m.Machine, m.User
		if machine == "" {
			machine = msg.HostMachine
		}
		if user == "" {
			user = hg.HostGrant.User
		}
		a.Service, a.Op, args = msg.Policy, msg.OpCreateShellSession, msg.CreateShellSession{Machine: machine, User: user}
	} else {
		var tok []byte
		if m.Share != "" {
			var err error
			if tok, err = base64.RawURLEncoding.DecodeString(m.Share); err != nil {
				c.fail(m.T, rpc.CodeBadRequest, "share token is not base64url")
				return
			}
		}
		a.Service, a.Op, args = msg.PtyStore, msg.OpPtyGet, msg.PtyGet{ID: m.ID, ShareToken: tok}
	}
	raw, err := msgpack.Marshal(args)
	if err != nil {
		c.fail(m.T, rpc.CodeInternal, "could not encode the request")
		return
	}
	a.Args = raw
	rep, fd, err := fb.FleetOpen(ctx, a)
	if err != nil {
		c.failErr(m.T, err)
		return
	}
	if rep.Host != m.Host || !validRemoteID(rep.Session.ID) {
		fd.Close()
		c.log.Error("fleet-open answered for another host or with an invalid session ID", "host", m.Host, "answered", rep.Host, "session", rep.Session.ID)
		c.fail(m.T, rpc.CodeInternal, "the server could not do that; see its log")
		return
	}
	key := remoteKey(m.Host, rep.Session.ID)
	c.s.lim.learned(key, rep.Limits)
	c.log.Info("remote session", "op", m.T, "host", m.Host, "session", rep.Session.ID, "mode", rep.Mode, "rule", rep.Rule)
	c.attachOn(m.T, m.Host, rep.Session, hub.Join{Mode: rep.Mode, Shared: rep.Mode != msg.ModeOwner, Epoch: rep.Epoch}, fd, m.Cols, m.Rows)
}

func (c *conn) fleetShare(ctx context.Context, fb FleetBackend, m inMsg, hg msg.HostGrantReply) {
	switch m.Mode {
	case msg.SharePrivate, msg.ShareReadOnly, msg.ShareReadWrite:
	default:
		c.fail(m.T, rpc.CodeBadRequest, "mode is private, read-only or read-write")
		return
	}
	var rep msg.PtyShareReply
	if err := fleetCall(ctx, fb, m.Host, msg.PtyStore, msg.OpPtyShare, msg.PtyShare{ID: m.ID, Mode: m.Mode}, hg, &rep); err != nil {
		c.failErr(m.T, err)
		return
	}
	// As for a local session: viewers here lose what the change takes
	// away before the owner's page hears of it.
	if hs := c.s.hub.Get(remoteKey(m.Host, m.ID)); hs != nil {
		hs.Share(rep.Epoch, m.Mode, m.History)
	}
	c.log.Info("sharing changed", "host", m.Host, "session", m.ID, "mode", m.Mode, "epoch", rep.Epoch)
	out := outMsg{"t": "shared", "id": m.ID, "host": m.Host, "mode": m.Mode, "history": m.History}
	if len(rep.Token) > 0 {
		out["token"] = base64.RawURLEncoding.EncodeToString(rep.Token)
	}
	c.send(out)
}

func (c *conn) fleetEnd(ctx context.Context, fb FleetBackend, m inMsg, hg msg.HostGrantReply) {
	if err := fleetCall(ctx, fb, m.Host, msg.PtyStore, msg.OpPtyDrop, msg.PtyDrop{ID: m.ID}, hg, &msg.PtyDropReply{}); err != nil {
		c.failErr(m.T, err)
		return
	}
	if hs := c.s.hub.Get(remoteKey(m.Host, m.ID)); hs != nil {
		hs.Close()
	}
	c.send(outMsg{"t": "ended", "id": m.ID, "host": m.Host})
}

// userError is failErr's choice of what the page may read of an error,
// for a host's entry in the fleet view rather than an error message.
func (c *conn) userError(op string, err error) (code, text string) {
	code = rpc.CodeOf(err)
	var re *rpc.RemoteError
	var se *StoppedError
	if errors.As(err, &se) {
		c.log.Warn("helper stopped mid-call", "op", op, "helper", se.Helper, "err", err)
		return rpc.CodeInternal, "the " + se.Helper + " helper stopped before answering; try again"
	}
	switch code {
	case msg.CodeDenied, msg.CodeFailed, msg.CodeBadGrant, msg.CodeNotFound, rpc.CodeBadRequest, msg.CodeBusy, rpc.CodeForbidden:
		text = err.Error()
		if errors.As(err, &re) {
			text = re.Msg
		}
		c.log.Info("refused", "op", op, "code", code, "err", err)
		return code, text
	}
	c.log.Error("helper call failed", "op", op, "err", err)
	return rpc.CodeInternal, "the server could not do that; see its log"
}

// remoteGone closes a remote session's stream once nobody here watches
// it: ssh and the relay end, and the host's ptystore, told by its relay,
// runs its detached limit from now. A local session stays adopted (its
// master costs nothing); a remote one holds an ssh connection.
func (c *conn) remoteGone(key string) {
	if hs := c.s.hub.Get(key); hs != nil && hs.Stats().Viewers == 0 {
		hs.Close()
		// Out of the hub before this connection's next op, so that a
		// reattach opens a new stream instead of finding this one ending.
		select {
		case <-hs.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// hello is the first message: with a fleet, the page learns it has one
// and shows its hosts.
func (c *conn) hello() outMsg {
	m := outMsg{"t": "hello", "version": 1}
	if c.s.cfg.Fleet != nil {
		m["fleet"] = true
	}
	return m
}
