package frontend

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"sluice/frontend/internal/ptyutil"
	"sluice/msg"
	"sluice/rpc"
)

// fakeFleet stands in for auth's host-grant and the fleet helper: a
// "host" is a cat on a pty of this process. It records what it was asked,
// so tests can check the frontend asks with the connection's grant.
type fakeFleet struct {
	hosts []string
	// per host: denied (policy's answer), down (unreachable)
	denied, down map[string]bool
	// answerID, if set, is the session ID every host answers fleet-open
	// with (a compromised host picks any); answerHost likewise.
	answerID, answerHost string

	mu     sync.Mutex
	grants []msg.HostGrantRequest
	calls  []msg.FleetCall
	procs  []*exec.Cmd
	n      int
}

func (f *fakeFleet) HostGrant(_ context.Context, a msg.HostGrantRequest) (msg.HostGrantReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants = append(f.grants, a)
	return msg.HostGrantReply{HostGrant: msg.HostGrant{User: a.Grant.User, Host: a.Host}}, nil
}

func (f *fakeFleet) FleetHosts(context.Context) (msg.FleetHostsReply, error) {
	var r msg.FleetHostsReply
	for _, h := range f.hosts {
		r.Hosts = append(r.Hosts, msg.FleetHost{Name: h, Address: "10.0.0.1", Port: 22, User: "relay"})
	}
	return r, nil
}

func (f *fakeFleet) FleetCall(_ context.Context, a msg.FleetCall, reply any) error {
	f.mu.Lock()
	f.calls = append(f.calls, a)
	f.mu.Unlock()
	if f.down[a.Host] {
		return &rpc.RemoteError{Code: msg.CodeFailed, Msg: a.Host + ": cannot reach the host's relay (host unreachable)"}
	}
	var out any
	switch a.Op {
	case msg.OpAllowedTargets:
		r := msg.AllowedTargetsReply{Targets: []msg.Target{{User: "root", Machine: msg.HostMachine}}}
		if f.denied[a.Host] {
			r.Targets = nil
		}
		out = r
	case msg.OpPtyList:
		out = msg.PtyListReply{Sessions: []msg.SessionInfo{{ID: "s-" + a.Host, Owner: a.HostGrant.User, UnixUser: "root", Machine: msg.HostMachine}}}
	case msg.OpPtyDrop:
		out = msg.PtyDropReply{}
	case msg.OpPtyShare:
		out = msg.PtyShareReply{Token: []byte("tok"), Epoch: 2}
	default:
		return &rpc.RemoteError{Code: rpc.CodeBadRequest, Msg: "unknown op"}
	}
	b, _ := msgpack.Marshal(out)
	return msgpack.Unmarshal(b, reply)
}

func (f *fakeFleet) FleetOpen(_ context.Context, a msg.FleetCall) (msg.FleetOpenReply, *os.File, error) {
	f.mu.Lock()
	f.calls = append(f.calls, a)
	f.n++
	n := f.n
	f.mu.Unlock()
	if f.denied[a.Host] {
		return msg.FleetOpenReply{}, nil, &rpc.RemoteError{Code: msg.CodeDenied, Msg: a.Host + ": no rule allows alice as root on .host"}
	}
	m, cmd, err := ptyutil.Command(80, 24, "sh", "-c", "echo on-"+a.Host+"; exec cat")
	if err != nil {
		return msg.FleetOpenReply{}, nil, err
	}
	f.mu.Lock()
	f.procs = append(f.procs, cmd)
	f.mu.Unlock()
	id, host := "r"+strings.Repeat("x", n), a.Host
	if f.answerID != "" {
		id = f.answerID
	}
	if f.answerHost != "" {
		host = f.answerHost
	}
	return msg.FleetOpenReply{Host: host, Mode: msg.ModeOwner, Session: msg.SessionInfo{ID: id, Owner: a.HostGrant.User, UnixUser: "root", Machine: msg.HostMachine}}, m, nil
}

func (f *fakeFleet) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.procs {
		p.Process.Kill()
	}
}

func startFleet(t *testing.T, f *fakeFleet) *local {
	t.Helper()
	var cfg Config
	if f != nil {
		cfg.Fleet = f
		t.Cleanup(f.stop)
	}
	return startLocalConfig(t, cfg, func(string) []string { return []string{"sh", "-c", "echo on-local; exec cat"} })
}

// rawDial opens a WebSocket and returns it with the hello message.
func rawDial(t *testing.T, l *local) (*websocket.Conn, map[string]any) {
	t.Helper()
	h := http.Header{}
	h.Set("Origin", l.origin)
	ws, _, err := websocket.DefaultDialer.Dial(l.ws, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	var hello map[string]any
	json.Unmarshal(nextText(t, ws), &hello)
	return ws, hello
}

func signInRaw(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	for _, m := range []string{`{"t":"login-begin"}`, `{"t":"login-finish","assertion":{}}`} {
		ws.WriteMessage(websocket.TextMessage, []byte(m))
		nextText(t, ws)
	}
}

func sendJSON(t *testing.T, ws *websocket.Conn, m map[string]any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	json.Unmarshal(nextText(t, ws), &r)
	return r
}

// sendFor sends m and returns the first answer of type typ or an error,
// skipping the stream's own messages (viewers, exit).
func sendFor(t *testing.T, ws *websocket.Conn, m map[string]any, typ string) map[string]any {
	t.Helper()
	r := sendJSON(t, ws, m)
	for r["t"] != typ && r["t"] != "error" {
		r = map[string]any{}
		json.Unmarshal(nextText(t, ws), &r)
	}
	return r
}

// readUntil reads pty output until want shows.
func readUntil(t *testing.T, ws *websocket.Conn, want string) {
	t.Helper()
	var got strings.Builder
	ws.SetReadDeadline(time.Now().Add(deadline))
	for !strings.Contains(got.String(), want) {
		mt, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %q: %v; got %q", want, err, got.String())
		}
		if mt == websocket.BinaryMessage {
			got.Write(b)
		} else if strings.Contains(string(b), `"t":"error"`) {
			t.Fatalf("waiting for %q: %s", want, b)
		}
	}
}

// TestNoFleetIsTheSingleHost: without Config.Fleet the hello says
// nothing of a fleet, "fleet" is an unknown message and a host field
// changes nothing, as before there was a fleet.
func TestNoFleetIsTheSingleHost(t *testing.T) {
	l := startFleet(t, nil)
	ws, hello := rawDial(t, l)
	if _, ok := hello["fleet"]; ok || hello["t"] != "hello" {
		t.Fatalf("hello without a fleet: %v", hello)
	}
	signInRaw(t, ws)
	if r := sendJSON(t, ws, map[string]any{"t": "fleet"}); r["t"] != "error" || r["message"] != "unknown message type" {
		t.Fatalf("fleet without a fleet: %v", r)
	}
	r := sendJSON(t, ws, map[string]any{"t": "create", "host": "h1", "cols": 80, "rows": 24})
	if r["t"] != "attached" {
		t.Fatalf("create with a host field and no fleet: %v", r)
	}
	if s := r["session"].(map[string]any); s["host"] != nil {
		t.Fatalf("a local session with a host: %v", s)
	}
	readUntil(t, ws, "on-local")
}

// TestFleetView: one message lists every host with what its policy
// offers and the user's sessions there; a denying host shows an empty
// list and a down host its error, and neither hides the others. Every
// host grant is asked with the connection's own grant.
func TestFleetView(t *testing.T) {
	f := &fakeFleet{hosts: []string{"h1", "h2", "h3", "h4"}, denied: map[string]bool{"h3": true}, down: map[string]bool{"h4": true}}
	l := startFleet(t, f)
	ws, hello := rawDial(t, l)
	if hello["fleet"] != true {
		t.Fatalf("hello on a gateway: %v", hello)
	}
	if r := sendJSON(t, ws, map[string]any{"t": "fleet"}); r["t"] != "error" || r["code"] != codeSignIn {
		t.Fatalf("fleet before sign-in: %v", r)
	}
	if len(f.grants) != 0 {
		t.Fatalf("host grants asked before sign-in: %v", f.grants)
	}
	signInRaw(t, ws)
	r := sendJSON(t, ws, map[string]any{"t": "fleet"})
	if r["t"] != "fleet" {
		t.Fatalf("fleet: %v", r)
	}
	var view struct {
		Hosts []FleetHost `json:"hosts"`
	}
	b, _ := json.Marshal(r)
	json.Unmarshal(b, &view)
	got := map[string]FleetHost{}
	for _, h := range view.Hosts {
		got[h.Name] = h
	}
	for _, n := range []string{"h1", "h2"} {
		h := got[n]
		if h.Error != "" || len(h.Targets) != 1 || h.Targets[0].User != "root" || len(h.Sessions) != 1 ||
			h.Sessions[0].ID != "s-"+n || h.Sessions[0].Host != n {
			t.Fatalf("%s in the view: %+v", n, h)
		}
	}
	if h := got["h3"]; h.Error != "" || len(h.Targets) != 0 {
		t.Fatalf("h3 (denying) in the view: %+v", h)
	}
	if h := got["h4"]; h.Code != msg.CodeFailed || !strings.Contains(h.Error, "h4: cannot reach") {
		t.Fatalf("h4 (down) in the view: %+v", h)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.grants) != 4 {
		t.Fatalf("%d host grants asked, want one per host", len(f.grants))
	}
	for _, g := range f.grants {
		if g.Grant.User != "bench" || g.Grant.Expires == 0 {
			t.Fatalf("host grant asked with %+v, not the connection's grant", g.Grant)
		}
	}
	for _, c := range f.calls {
		if c.HostGrant.Host != c.Host {
			t.Fatalf("a call to %s carried a host grant for %s", c.Host, c.HostGrant.Host)
		}
	}
}

// TestFleetSession: a session on a host opens, streams and takes input as
// a local one; ending it asks that host; a denial is the host's.
func TestFleetSession(t *testing.T) {
	f := &fakeFleet{hosts: []string{"h1", "h3"}, denied: map[string]bool{"h3": true}}
	l := startFleet(t, f)
	ws, _ := rawDial(t, l)
	signInRaw(t, ws)
	r := sendJSON(t, ws, map[string]any{"t": "create", "host": "h1", "user": "root", "cols": 80, "rows": 24})
	if r["t"] != "attached" {
		t.Fatalf("create on h1: %v", r)
	}
	s := r["session"].(map[string]any)
	if s["host"] != "h1" || s["owner"] != "bench" {
		t.Fatalf("attached session %v", s)
	}
	readUntil(t, ws, "on-h1")
	ws.WriteMessage(websocket.BinaryMessage, []byte("typed-on-h1\n"))
	readUntil(t, ws, "typed-on-h1")
	if n := l.srv.Hub().Get(remoteKey("h1", s["id"].(string))); n == nil {
		t.Fatal("the hub does not stream the remote session under its host's key")
	}
	if r := sendFor(t, ws, map[string]any{"t": "share", "host": "h1", "id": s["id"], "mode": "read-only"}, "shared"); r["t"] != "shared" || r["token"] == nil || r["host"] != "h1" {
		t.Fatalf("share on h1: %v", r)
	}
	if r := sendFor(t, ws, map[string]any{"t": "end", "host": "h1", "id": s["id"]}, "ended"); r["t"] != "ended" || r["host"] != "h1" {
		t.Fatalf("end on h1: %v", r)
	}
	if r := sendJSON(t, ws, map[string]any{"t": "create", "host": "h3", "user": "root"}); r["t"] != "error" || r["code"] != msg.CodeDenied || !strings.Contains(r["message"].(string), "h3") {
		t.Fatalf("create on a denying host: %v", r)
	}
	for _, bad := range []string{".host", "../h1", "h1/x", strings.Repeat("h", 300)} {
		if r := sendJSON(t, ws, map[string]any{"t": "create", "host": bad}); r["t"] != "error" || r["code"] != rpc.CodeBadRequest {
			t.Fatalf("create on host %q: %v", bad, r)
		}
	}
	if r := sendJSON(t, ws, map[string]any{"t": "passkey-list", "host": "h1"}); r["t"] != "error" || r["code"] != rpc.CodeBadRequest {
		t.Fatalf("an op the fleet does not carry, with a host: %v", r)
	}
}

// TestFleetHostCannotJoinLocalSession: a host (compromised) answers
// fleet-open with the ID of a session this gateway streams for someone
// else. The hub keys remote sessions by host, so the stream is the
// host's own and the local session is untouched: nothing typed reaches
// it and nothing of it is seen.
func TestFleetHostCannotJoinLocalSession(t *testing.T) {
	f := &fakeFleet{hosts: []string{"h1"}}
	l := startFleet(t, f)
	owner, _ := rawDial(t, l)
	signInRaw(t, owner)
	r := sendJSON(t, owner, map[string]any{"t": "create", "cols": 80, "rows": 24})
	if r["t"] != "attached" {
		t.Fatalf("local create: %v", r)
	}
	localID := r["session"].(map[string]any)["id"].(string)
	readUntil(t, owner, "on-local")

	f.answerID = localID
	ws, _ := rawDial(t, l)
	signInRaw(t, ws)
	r = sendJSON(t, ws, map[string]any{"t": "create", "host": "h1", "cols": 80, "rows": 24})
	if r["t"] != "attached" {
		t.Fatalf("remote create: %v", r)
	}
	readUntil(t, ws, "on-h1")
	ws.WriteMessage(websocket.BinaryMessage, []byte("meant-for-h1\n"))
	readUntil(t, ws, "meant-for-h1")
	if hs := l.srv.Hub().Get(localID); hs == nil || len(hs.Viewers()) != 1 {
		t.Fatalf("the local session's viewers: %+v", hs.Viewers())
	}
	// The local session saw none of it: its next output is its own.
	owner.WriteMessage(websocket.BinaryMessage, []byte("owner-only\n"))
	var got strings.Builder
	owner.SetReadDeadline(time.Now().Add(deadline))
	for !strings.Contains(got.String(), "owner-only") {
		mt, b, err := owner.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if mt == websocket.BinaryMessage {
			got.Write(b)
		}
	}
	if strings.Contains(got.String(), "meant-for-h1") || strings.Contains(got.String(), "on-h1") {
		t.Fatalf("the host's stream reached the local session: %q", got.String())
	}

	// An answer for another host than asked is refused outright.
	f.answerID, f.answerHost = "", "h2"
	if r := sendJSON(t, ws, map[string]any{"t": "create", "host": "h1"}); r["t"] != "error" || r["code"] != rpc.CodeInternal {
		t.Fatalf("an answer naming another host: %v", r)
	}
}

// TestFleetDetachEndsTheStream: once nobody here watches a remote
// session, its stream (ssh, in the real fleet helper) is closed, so the
// host hears the viewer left; the session itself lives on the host.
func TestFleetDetachEndsTheStream(t *testing.T) {
	f := &fakeFleet{hosts: []string{"h1"}}
	l := startFleet(t, f)
	ws, _ := rawDial(t, l)
	signInRaw(t, ws)
	r := sendJSON(t, ws, map[string]any{"t": "create", "host": "h1", "cols": 80, "rows": 24})
	if r["t"] != "attached" {
		t.Fatalf("create: %v", r)
	}
	key := remoteKey("h1", r["session"].(map[string]any)["id"].(string))
	readUntil(t, ws, "on-h1")
	if r := sendFor(t, ws, map[string]any{"t": "detach"}, "detached"); r["t"] != "detached" {
		t.Fatalf("detach: %v", r)
	}
	if l.srv.Hub().Get(key) != nil {
		t.Fatal("the remote stream outlived its last viewer")
	}
	// The stand-in's cat got the hangup: the stream's pty is closed.
	f.mu.Lock()
	p := f.procs[0]
	f.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatal("the stream's pty is still open after the last viewer left")
	}
}
