package ptystore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/grant"
	"sluice/internal/optable"
	"sluice/internal/ticket"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/rpctest"
	"sluice/sdnotify"
)

// Any valid build IDs do: the handler tests pair client and server hellos
// directly, without a manifest.
var (
	webProto, _   = msg.Lookup(msg.ProtoWebToPtyStore)
	adminProto, _ = msg.Lookup(msg.ProtoAdminToPtyStore)
	putProto, _   = msg.Lookup(msg.ProtoPolicyToPtyStore)
	putClient     = rpc.Hello{Intent: msg.Intent(putProto, "client"), BuildID: strings.Repeat("e5", 32)}
	putServer     = rpc.Hello{Intent: msg.Intent(putProto, "server"), BuildID: strings.Repeat("f6", 32)}
	webClient     = rpc.Hello{Intent: msg.Intent(webProto, "client"), BuildID: strings.Repeat("a1", 32)}
	webServer     = rpc.Hello{Intent: msg.Intent(webProto, "server"), BuildID: strings.Repeat("b2", 32)}
	adminClient   = rpc.Hello{Intent: msg.Intent(adminProto, "client"), BuildID: strings.Repeat("c3", 32)}
	adminServer   = rpc.Hello{Intent: msg.Intent(adminProto, "server"), BuildID: strings.Repeat("d4", 32)}
)

// harness is a store and its handler behind a real socket, with a test fd
// store at a real notify socket.
type harness struct {
	t     testing.TB
	key   grant.Key
	store *Store
	fds   *fdStore
	web   *rpc.Client
	admin *rpc.Client
	pol   *rpc.Client // "policy to ptystore": the one way in for pty-put
	drops chan string // ids of dropped sessions, with the reason
	hd    *Handler    // set fields before the first call only

	handler *Handler
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	return newHarnessPolicy(t, cfg, nil)
}

// newHarnessPolicy is newHarness with a handler that asks pc on attach.
func newHarnessPolicy(t testing.TB, cfg Config, pc func(grant.Key) PolicyChecker) *harness {
	t.Helper()
	h := &harness{t: t, key: grant.NewKey(), fds: newFDStore(t), drops: make(chan string, 64)}
	cfg.Log = testLog(t)
	cfg.Notify = func(state string, fds ...*os.File) error { return sdnotify.NotifyTo(h.fds.addr, state, fds...) }
	cfg.OnDrop = func(info msg.SessionInfo, reason string) { h.drops <- info.ID + " " + reason }
	st, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.store = st
	t.Cleanup(st.Close)
	hd := NewHandler(st, h.key)
	h.hd = hd
	if pc != nil {
		hd.Policy = pc(h.key)
	}
	h.handler = hd
	me := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	srv := &rpc.Server{Name: "ptystore", Log: testLog(t), Routes: []rpc.Route{
		{Client: webClient, Server: webServer, Allow: me, MaxFDs: 1, Handle: optable.HandlerOf(hd.Tables(), msg.ProtoWebToPtyStore)},
		{Client: adminClient, Server: adminServer, Allow: me, Handle: optable.HandlerOf(hd.Tables(), msg.ProtoAdminToPtyStore)},
		{Client: putClient, Server: putServer, Allow: me, MaxFDs: 1, Handle: optable.HandlerOf(hd.Tables(), msg.ProtoPolicyToPtyStore)},
	}}
	path := rpctest.Serve(t, srv, "", 0o600)
	h.web = &rpc.Client{Path: path, Hello: webClient, Expect: webServer}
	h.admin = &rpc.Client{Path: path, Hello: adminClient, Expect: adminServer}
	h.pol = &rpc.Client{Path: path, Hello: putClient, Expect: putServer}
	return h
}

func (h *harness) grant(user string) msg.Grant {
	g, err := grant.Sign(h.key, user, time.Now(), time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	return g
}

// call makes one call; it returns the fds of the reply and the error code
// ("" on success).
func call(t testing.TB, cl *rpc.Client, op string, args any, fds []*os.File, resp any) ([]*os.File, string) {
	t.Helper()
	raw, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cl.Call(context.Background(), msg.Request{Op: op, Args: raw}, fds, resp)
	if err != nil {
		code := rpc.CodeOf(err)
		if code == "" {
			t.Fatalf("%s: %v", op, err)
		}
		return nil, code
	}
	return got, ""
}

func sessionInfo(id, owner string) msg.SessionInfo {
	return msg.SessionInfo{ID: id, Owner: owner, UnixUser: "u-" + owner, Machine: msg.HostMachine, PID: 42}
}

// put hands the shell's master to the store as owner and closes the test's
// own copy, so that the store holds the only one, as after a frontend exit.
func (h *harness) put(sh *shell, id, owner string) msg.SessionInfo {
	h.t.Helper()
	var rep msg.PtyPutReply
	if _, code := call(h.t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant(owner), Session: sessionInfo(id, owner), Ticket: tk(h.t, h.key, sessionInfo(id, owner), sh.master)}, []*os.File{sh.master}, &rep); code != "" {
		h.t.Fatalf("put %s: %s", id, code)
	}
	sh.master.Close()
	h.fds.waitMsg(h.t, "FDSTORE=1")
	return rep.Session
}

func (h *harness) get(id string, g msg.Grant, token []byte) (*os.File, msg.PtyGetReply, string) {
	h.t.Helper()
	var rep msg.PtyGetReply
	fds, code := call(h.t, h.web, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id, ShareToken: token}, nil, &rep)
	if code != "" {
		return nil, rep, code
	}
	if len(fds) != 1 {
		h.t.Fatalf("get %s: %d fds", id, len(fds))
	}
	h.t.Cleanup(func() { fds[0].Close() })
	return fds[0], rep, ""
}

func (h *harness) list(g msg.Grant) []string {
	h.t.Helper()
	var rep msg.PtyListReply
	if _, code := call(h.t, h.web, msg.OpPtyList, msg.PtyList{Grant: g}, nil, &rep); code != "" {
		h.t.Fatalf("list: %s", code)
	}
	return ids(rep.Sessions)
}

func (h *harness) adminList() []string {
	h.t.Helper()
	var rep msg.PtyListReply
	if _, code := call(h.t, h.admin, msg.OpPtyList, msg.PtyList{}, nil, &rep); code != "" {
		h.t.Fatalf("admin list: %s", code)
	}
	return ids(rep.Sessions)
}

func ids(ss []msg.SessionInfo) []string {
	out := []string{}
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func (h *harness) waitDrop(want string) {
	h.t.Helper()
	select {
	case got := <-h.drops:
		if got != want {
			h.t.Fatalf("dropped %q, want %q", got, want)
		}
	case <-time.After(waitLimit):
		h.t.Fatalf("no drop, want %q", want)
	}
}

func TestPutGetListDrop(t *testing.T) {
	h := newHarness(t, Config{})
	sh := startShell(t)
	info := h.put(sh, "s1", "alice")
	if info.Sharing != msg.SharePrivate || info.Created == 0 || info.Owner != "alice" || info.UnixUser != "u-alice" {
		t.Fatalf("put reply %+v", info)
	}

	// The fd store holds it under a name that carries the session.
	names := h.fds.names()
	if len(names) != 1 {
		t.Fatalf("fd store holds %q", names)
	}
	stored, epoch, err := parseFDName(names[0])
	if err != nil || stored != info || epoch != 0 {
		t.Fatalf("stored name decodes to %+v epoch %d (%v), want %+v", stored, epoch, err, info)
	}

	alice, bob := h.grant("alice"), h.grant("bob")
	if got := h.list(alice); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("alice lists %q", got)
	}
	if got := h.list(bob); len(got) != 0 {
		t.Fatalf("bob lists %q", got)
	}
	if got := h.adminList(); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("admin lists %q", got)
	}

	// The owner gets a working dup, twice over: the store keeps its own.
	for range 2 {
		f, rep, code := h.get("s1", alice, nil)
		if code != "" || rep.Mode != msg.ModeOwner || rep.Session != info {
			t.Fatalf("get: %s %+v", code, rep)
		}
		converse(t, f)
		f.Close()
	}

	// Not bob's: he can neither get nor drop it, and it looks absent.
	if _, _, code := h.get("s1", bob, nil); code != msg.CodeNotFound {
		t.Fatalf("bob's get: %q, want not-found", code)
	}
	if _, code := call(t, h.web, msg.OpPtyDrop, msg.PtyDrop{Grant: bob, ID: "s1"}, nil, nil); code != msg.CodeNotFound {
		t.Fatalf("bob's drop: %q, want not-found", code)
	}
	if _, _, code := h.get("nope", alice, nil); code != msg.CodeNotFound {
		t.Fatalf("get of unknown id: %q", code)
	}

	// The owner drops it while a frontend still holds a dup: the shell
	// must still get its hangup.
	held, _, _ := h.get("s1", alice, nil)
	if _, code := call(t, h.web, msg.OpPtyDrop, msg.PtyDrop{Grant: alice, ID: "s1"}, nil, nil); code != "" {
		t.Fatalf("drop: %s", code)
	}
	if sig := sh.exited(t); sig != syscall.SIGHUP {
		t.Fatalf("shell ended by signal %v, want SIGHUP", sig)
	}
	held.Close()
	h.waitDrop("s1 drop")
	h.fds.waitMsg(t, "FDSTOREREMOVE=1", "FDNAME="+names[0])
	if n := h.fds.names(); len(n) != 0 {
		t.Fatalf("fd store still holds %q", n)
	}
	if got := h.adminList(); len(got) != 0 {
		t.Fatalf("admin lists %q after drop", got)
	}
	if _, _, code := h.get("s1", alice, nil); code != msg.CodeNotFound {
		t.Fatalf("get after drop: %q", code)
	}
}

func TestShareTokens(t *testing.T) {
	h := newHarness(t, Config{})
	sh := startShell(t)
	other := startShell(t)
	h.put(sh, "s1", "alice")
	h.put(other, "s2", "alice")
	alice, bob := h.grant("alice"), h.grant("bob")

	share := func(g msg.Grant, id, mode string) ([]byte, string) {
		t.Helper()
		var rep msg.PtyShareReply
		_, code := call(t, h.web, msg.OpPtyShare, msg.PtyShare{Grant: g, ID: id, Mode: mode}, nil, &rep)
		return rep.Token, code
	}
	// mustShare shares as the owner; a change of mode re-stores the fd
	// under a new name, which is waited for.
	mustShare := func(id, mode string) []byte {
		t.Helper()
		before := h.store.List(func(i msg.SessionInfo) bool { return i.ID == id })
		tok, code := share(alice, id, mode)
		if code != "" {
			t.Fatalf("share %s %s: %s", id, mode, code)
		}
		if len(before) == 1 && before[0].Sharing != mode {
			h.fds.waitMsg(t, "FDSTOREREMOVE=1")
			h.fds.waitMsg(t, "FDSTORE=1")
		}
		return tok
	}
	storedSharing := func(id string) (string, uint32) {
		t.Helper()
		for _, n := range h.fds.names() {
			if info, epoch, err := parseFDName(n); err == nil && info.ID == id {
				return info.Sharing, epoch
			}
		}
		t.Fatalf("%s not in the fd store (%q)", id, h.fds.names())
		return "", 0
	}

	// No token, no entry; bob cannot share alice's session either.
	if _, _, code := h.get("s1", bob, nil); code != msg.CodeNotFound {
		t.Fatalf("bob without token: %q", code)
	}
	if _, code := share(bob, "s1", msg.ShareReadWrite); code != msg.CodeNotFound {
		t.Fatalf("bob sharing alice's session: %q", code)
	}
	if _, code := share(alice, "s1", "public"); code != rpc.CodeBadRequest {
		t.Fatalf("unknown mode: %q", code)
	}

	ro := mustShare("s1", msg.ShareReadOnly)
	if again := mustShare("s1", msg.ShareReadOnly); string(again) != string(ro) {
		t.Fatal("sharing in the same mode again changed the token")
	}
	if mode, epoch := storedSharing("s1"); mode != msg.ShareReadOnly || epoch != 1 {
		t.Fatalf("fd store says %s epoch %d", mode, epoch)
	}
	f, rep, code := h.get("s1", bob, ro)
	if code != "" || rep.Mode != msg.ShareReadOnly || rep.Epoch != 1 {
		t.Fatalf("bob with read-only token: %q %+v", code, rep)
	}
	converse(t, f)
	// The owner is the owner, token or not.
	if _, rep, _ := h.get("s1", alice, ro); rep.Mode != msg.ModeOwner || rep.Epoch != 0 {
		t.Fatalf("owner with a token got mode %q epoch %d", rep.Mode, rep.Epoch)
	}
	// The reply names the epoch the frontend applies changes by.
	var srep msg.PtyShareReply
	if _, code := call(t, h.web, msg.OpPtyShare, msg.PtyShare{Grant: alice, ID: "s1", Mode: msg.ShareReadOnly}, nil, &srep); code != "" || srep.Epoch != 1 {
		t.Fatalf("share reply: %q epoch %d", code, srep.Epoch)
	}

	rw := mustShare("s1", msg.ShareReadWrite)
	tampered := slices.Clone(rw)
	tampered[len(tampered)-1] ^= 1
	upgraded := slices.Clone(ro)
	upgraded[1] = rw[1] // claim read-write with the read-only MAC

	cases := []struct {
		name  string
		id    string
		token []byte
		code  string
		mode  string
	}{
		{"read-write token", "s1", rw, "", msg.ShareReadWrite},
		{"older read-only token revoked by the mode change", "s1", ro, msg.CodeBadGrant, ""},
		{"token for another session", "s2", rw, msg.CodeBadGrant, ""},
		{"tampered MAC", "s1", tampered, msg.CodeBadGrant, ""},
		{"mode byte changed", "s1", upgraded, msg.CodeBadGrant, ""},
		{"truncated", "s1", rw[:10], msg.CodeBadGrant, ""},
	}
	for _, tc := range cases {
		f, rep, code := h.get(tc.id, bob, tc.token)
		if code != tc.code || rep.Mode != tc.mode {
			t.Errorf("%s: code %q mode %q, want %q %q", tc.name, code, rep.Mode, tc.code, tc.mode)
		}
		if f != nil {
			f.Close()
		}
	}

	// Private revokes everything; sharing again makes a new token, and the
	// old one of that same mode stays dead.
	if tok := mustShare("s1", msg.SharePrivate); tok != nil {
		t.Fatalf("private share returned token %x", tok)
	}
	if mode, _ := storedSharing("s1"); mode != msg.SharePrivate {
		t.Fatalf("fd store says %s after private", mode)
	}
	if _, _, code := h.get("s1", bob, rw); code != msg.CodeBadGrant {
		t.Fatalf("read-write token after private: %q", code)
	}
	rw2 := mustShare("s1", msg.ShareReadWrite)
	if _, _, code := h.get("s1", bob, rw); code != msg.CodeBadGrant {
		t.Fatalf("pre-private token after re-share: %q", code)
	}
	if _, rep, code := h.get("s1", bob, rw2); code != "" || rep.Mode != msg.ShareReadWrite {
		t.Fatalf("new token: %q %+v", code, rep)
	}
	// A token is no substitute for signing in.
	if _, _, code := h.get("s1", msg.Grant{User: "bob"}, rw2); code != msg.CodeBadGrant {
		t.Fatalf("token without a valid grant: %q", code)
	}
	if n := len(h.fds.names()); n != 2 {
		t.Fatalf("fd store holds %d fds after share changes, want 2: %q", n, h.fds.names())
	}
}

func TestBadGrantsRefused(t *testing.T) {
	h := newHarness(t, Config{})
	sh := startShell(t)
	h.put(sh, "s1", "alice")

	good := h.grant("alice")
	forged, _ := grant.Sign(grant.NewKey(), "alice", time.Now(), time.Hour)
	expired, _ := grant.Sign(h.key, "alice", time.Now().Add(-2*time.Hour), time.Hour)
	future, _ := grant.Sign(h.key, "alice", time.Now().Add(time.Hour), time.Hour)
	renamed := good
	renamed.User = "mallory"
	grants := map[string]msg.Grant{
		"forged": forged, "expired": expired, "issued in the future": future,
		"user changed": renamed, "empty": {},
	}
	for name, g := range grants {
		t.Run(name, func(t *testing.T) {
			ops := []struct {
				op   string
				args any
			}{
				{msg.OpPtyGet, msg.PtyGet{Grant: g, ID: "s1"}},
				{msg.OpPtyList, msg.PtyList{Grant: g}},
				{msg.OpPtyDrop, msg.PtyDrop{Grant: g, ID: "s1"}},
				{msg.OpPtyShare, msg.PtyShare{Grant: g, ID: "s1", Mode: msg.ShareReadWrite}},
			}
			for _, o := range ops {
				if _, code := call(t, h.web, o.op, o.args, nil, nil); code != msg.CodeBadGrant {
					t.Errorf("%s: %q, want bad-grant", o.op, code)
				}
			}
			// A put with a bad grant is refused and its fd closed.
			r, w, _ := os.Pipe()
			defer r.Close()
			_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: g, Session: sessionInfo("s9", g.User), Ticket: tk(t, h.key, sessionInfo("s9", g.User), w)}, []*os.File{w}, nil)
			w.Close()
			if code != msg.CodeBadGrant {
				t.Errorf("put: %q, want bad-grant", code)
			}
			if !isClosedPipe(t, r) {
				t.Error("put with a bad grant: the helper kept the fd")
			}
		})
	}
	if got := h.adminList(); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("sessions after bad grants: %q", got)
	}
	if !sh.running() {
		t.Fatal("a bad grant's drop ended the shell")
	}
}

func TestPutRefused(t *testing.T) {
	h := newHarness(t, Config{})
	alice := h.grant("alice")

	type offer struct {
		fd     *os.File
		closed func() bool // reports whether the helper closed its copy
	}
	cases := []struct {
		name    string
		make    func(t *testing.T) offer
		session msg.SessionInfo
		code    string
	}{
		{"pipe", func(t *testing.T) offer {
			r, w, _ := os.Pipe()
			t.Cleanup(func() { r.Close() })
			return offer{w, func() bool { return isClosedPipe(t, r) }}
		}, sessionInfo("p", "alice"), rpc.CodeBadRequest},
		{"pty slave", func(t *testing.T) offer {
			m, s := openPTY(t)
			t.Cleanup(func() { m.Close() })
			return offer{s, func() bool { return hungUp(int(m.Fd())) }}
		}, sessionInfo("p", "alice"), rpc.CodeBadRequest},
		// Only a stream socket is a recorded session's (termsock).
		{"seqpacket socket", func(t *testing.T) offer {
			fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
			t.Cleanup(func() { unix.Close(fds[1]) })
			return offer{os.NewFile(uintptr(fds[0]), "seq"), nil}
		}, sessionInfo("p", "alice"), rpc.CodeBadRequest},
		{"datagram socket", func(t *testing.T) offer {
			fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
			t.Cleanup(func() { unix.Close(fds[1]) })
			return offer{os.NewFile(uintptr(fds[0]), "dgram"), nil}
		}, sessionInfo("p", "alice"), rpc.CodeBadRequest},
		{"/dev/null", func(t *testing.T) offer {
			f, _ := os.Open("/dev/null")
			return offer{f, nil}
		}, sessionInfo("p", "alice"), rpc.CodeBadRequest},
		{"regular file", func(t *testing.T) offer {
			f, _ := os.Create(filepath.Join(t.TempDir(), "f"))
			return offer{f, nil}
		}, sessionInfo("p", "alice"), rpc.CodeBadRequest},
		{"someone else's session", func(t *testing.T) offer {
			m, s := openPTY(t)
			t.Cleanup(func() { s.Close() })
			return offer{m, nil}
		}, sessionInfo("p", "bob"), msg.CodeBadGrant},
		{"no id", func(t *testing.T) offer {
			m, s := openPTY(t)
			t.Cleanup(func() { s.Close() })
			return offer{m, nil}
		}, sessionInfo("", "alice"), rpc.CodeBadRequest},
		{"metadata too long for an fd name", func(t *testing.T) offer {
			m, s := openPTY(t)
			t.Cleanup(func() { s.Close() })
			return offer{m, nil}
		}, msg.SessionInfo{ID: strings.Repeat("i", 64), Owner: "alice", UnixUser: strings.Repeat("u", 64), Machine: strings.Repeat("m", 64)}, rpc.CodeBadRequest},
	}
	// A compromised frontend's terminal escapes, bound for `sluicectl
	// sessions` on a root terminal: refused as policy refuses them.
	for _, bad := range []struct{ name, user, machine string }{
		{"title escape in unix_user", "root\x1b]0;pwned\x07", msg.HostMachine},
		{"clear screen in machine", "root", "web1\x1b[2J"},
		{"OSC 52 in machine", "root", "\x1b]52;c;cm0gLXJmIH4=\x07"},
		{"C1 CSI in unix_user", "root\u009b2J", msg.HostMachine},
		{"invalid UTF-8 in unix_user", "root\xff", msg.HostMachine},
	} {
		cases = append(cases, struct {
			name    string
			make    func(t *testing.T) offer
			session msg.SessionInfo
			code    string
		}{bad.name, func(t *testing.T) offer {
			m, s := openPTY(t)
			t.Cleanup(func() { s.Close() })
			return offer{m, nil}
		}, msg.SessionInfo{ID: "esc", Owner: "alice", UnixUser: bad.user, Machine: bad.machine}, rpc.CodeBadRequest})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.make(t)
			_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: tc.session, Ticket: tk(t, h.key, tc.session, o.fd)}, []*os.File{o.fd}, nil)
			o.fd.Close()
			if code != tc.code {
				t.Fatalf("put: %q, want %q", code, tc.code)
			}
			if o.closed != nil && !o.closed() {
				t.Fatal("the helper kept the refused fd open")
			}
		})
	}

	// Zero fds and a get with an fd attached are refused too.
	if _, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: sessionInfo("z", "alice")}, nil, nil); code != rpc.CodeBadRequest {
		t.Fatalf("put without fd: %q", code)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	if _, code := call(t, h.web, msg.OpPtyGet, msg.PtyGet{Grant: alice, ID: "z"}, []*os.File{w}, nil); code != rpc.CodeBadRequest {
		t.Fatalf("get with an fd: %q", code)
	}
	w.Close()
	if !isClosedPipe(t, r) {
		t.Fatal("fd sent with a get was kept")
	}
	if _, code := call(t, h.web, "pty-steal", msg.PtyList{Grant: alice}, nil, nil); code != rpc.CodeBadRequest {
		t.Fatalf("unknown op: %q", code)
	}
	if n := h.fds.names(); len(n) != 0 || h.store.Len() != 0 {
		t.Fatalf("refused puts were stored: %q, %d held", n, h.store.Len())
	}
}

// A put is believed only as far as policy's ticket vouches: the session
// info as given and the fd as the kernel sees it. A frontend given a root
// shell for alice may not store it as anything else.
func TestPutTicket(t *testing.T) {
	h := newHarness(t, Config{})
	root, other := startShell(t), startShell(t)
	asRoot := msg.SessionInfo{ID: "s-root", Owner: "alice", UnixUser: "root", Machine: msg.HostMachine, Created: time.Now().UnixMilli(), PID: 42}
	good := tk(t, h.key, asRoot, root.master)
	with := func(f func(*msg.SessionInfo)) msg.SessionInfo { i := asRoot; f(&i); return i }
	expired := func() msg.SessionTicket {
		id, err := ticket.Identify(root.master)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := ticket.Sign(h.key, asRoot, id, time.Now().Add(-time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}()
	for _, tc := range []struct {
		name   string
		info   msg.SessionInfo
		ticket msg.SessionTicket
	}{
		{"relabelled alice as alice", with(func(i *msg.SessionInfo) { i.UnixUser = "alice" }), good},
		{"moved to another machine", with(func(i *msg.SessionInfo) { i.Machine = "box" }), good},
		{"another id", with(func(i *msg.SessionInfo) { i.ID = "s-other" }), good},
		{"another session's ticket", asRoot, tk(t, h.key, asRoot, other.master)},
		{"another key's ticket", asRoot, tk(t, grant.NewKey(), asRoot, root.master)},
		{"expired", asRoot, expired},
		{"no ticket", asRoot, msg.SessionTicket{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: tc.info, Ticket: tc.ticket}, []*os.File{root.master}, nil)
			if code != rpc.CodeBadRequest {
				t.Fatalf("put: %q, want %q", code, rpc.CodeBadRequest)
			}
			if n := h.store.Len(); n != 0 {
				t.Fatalf("refused put stored: %d held", n)
			}
		})
	}
	var rep msg.PtyPutReply
	if _, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: asRoot, Ticket: good}, []*os.File{root.master}, &rep); code != "" {
		t.Fatalf("put with its ticket: %q", code)
	}
	if got := h.store.List(nil); len(got) != 1 || got[0].UnixUser != "root" || got[0].Machine != msg.HostMachine {
		t.Fatalf("stored %+v, want alice as root on .host", got)
	}
}

// TestWebPutRefused: the frontend cannot put, not even with a good ticket:
// sessions come only from policy, which puts each before handing out its
// fd (a put the frontend could skip is a shell ptystore never hears of).
func TestWebPutRefused(t *testing.T) {
	h := newHarness(t, Config{})
	sh := startShell(t)
	info := sessionInfo("s1", "alice")
	_, code := call(t, h.web, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: info, Ticket: tk(t, h.key, info, sh.master)}, []*os.File{sh.master}, nil)
	// bad-request: the refused op takes no fd, so the frame is refused
	// before the op's forbidden.
	if code != rpc.CodeBadRequest && code != rpc.CodeForbidden {
		t.Fatalf("put over web to ptystore: %q, want refused", code)
	}
	if got := h.store.List(nil); len(got) != 0 {
		t.Fatalf("stored %+v", got)
	}
}

func TestDuplicateIDRefused(t *testing.T) {
	h := newHarness(t, Config{})
	h.put(startShell(t), "s1", "alice")
	sh := startShell(t)
	_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: sessionInfo("s1", "alice"), Ticket: tk(t, h.key, sessionInfo("s1", "alice"), sh.master)}, []*os.File{sh.master}, nil)
	if code != rpc.CodeBadRequest {
		t.Fatalf("second put of s1: %q", code)
	}
}

func TestDeadPTYDropped(t *testing.T) {
	h := newHarness(t, Config{})
	sh := startShell(t)
	stays := startShell(t)
	h.put(sh, "s1", "alice")
	h.put(stays, "s2", "alice")
	name := h.fds.names()[0]
	f, _, _ := h.get("s1", h.grant("alice"), nil)
	// A frontend may still hold the master: the shell's end decides.
	fmt.Fprintf(f, "exit\n")
	if sig := sh.exited(t); sig != 0 {
		t.Fatalf("shell ended by %v", sig)
	}
	h.waitDrop("s1 shell exited")
	h.fds.waitMsg(t, "FDSTOREREMOVE=1", "FDNAME="+name)
	if got := h.adminList(); !slices.Equal(got, []string{"s2"}) {
		t.Fatalf("sessions after s1's shell exited: %q", got)
	}
	if !stays.running() {
		t.Fatal("the other shell ended")
	}
}

// A hangup that is over before the grace period ends (the slave closed
// and opened again, as login(1) does around vhangup) keeps the session.
func TestTransientHangupKept(t *testing.T) {
	events := make(chan string, 16)
	h := newHarness(t, Config{HangupGrace: 500 * time.Millisecond, trace: func(ev, id string) { events <- ev + " " + id }})
	m, s := openPTY(t)
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	if _, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: sessionInfo("s1", "alice"), Ticket: tk(t, h.key, sessionInfo("s1", "alice"), m)}, []*os.File{m}, nil); code != "" {
		t.Fatal(code)
	}
	m.Close()
	next := func(want string) {
		t.Helper()
		select {
		case ev := <-events:
			if ev != want {
				t.Fatalf("event %q, want %q", ev, want)
			}
		case <-time.After(waitLimit):
			t.Fatalf("no event, want %q", want)
		}
	}
	s.Close()
	next("suspect s1")
	s2, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	next("rearm s1")
	if h.store.Len() != 1 {
		t.Fatal("session dropped during a transient hangup")
	}
	// And a hangup that lasts does end it.
	s2.Close()
	next("suspect s1")
	h.waitDrop("s1 shell exited")
}

func TestLimits(t *testing.T) {
	h := newHarness(t, Config{MaxSessions: 3, MaxPerUser: 2})
	try := func(id, owner string) string {
		t.Helper()
		m, s := openPTY(t)
		t.Cleanup(func() { s.Close() })
		_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant(owner), Session: sessionInfo(id, owner), Ticket: tk(t, h.key, sessionInfo(id, owner), m)}, []*os.File{m}, nil)
		m.Close()
		return code
	}
	steps := []struct{ id, owner, code string }{
		{"a1", "alice", ""},
		{"a2", "alice", ""},
		{"a3", "alice", msg.CodeDenied},
		{"b1", "bob", ""},
		{"c1", "carol", msg.CodeBusy},
	}
	for _, s := range steps {
		if code := try(s.id, s.owner); code != s.code {
			t.Fatalf("put %s for %s: %q, want %q", s.id, s.owner, code, s.code)
		}
	}
	// Dropping one frees a place.
	if _, code := call(t, h.admin, msg.OpPtyDrop, msg.PtyDrop{ID: "a1"}, nil, nil); code != "" {
		t.Fatal(code)
	}
	if code := try("c1", "carol"); code != "" {
		t.Fatalf("put after a drop: %q", code)
	}
}

func TestAdmin(t *testing.T) {
	h := newHarness(t, Config{})
	a, b := startShell(t), startShell(t)
	h.put(a, "s1", "alice")
	h.put(b, "s2", "bob")
	if got := h.adminList(); !slices.Equal(got, []string{"s1", "s2"}) && !slices.Equal(got, []string{"s2", "s1"}) {
		t.Fatalf("admin lists %q", got)
	}
	for _, op := range []string{msg.OpPtyGet, msg.OpPtyShare, msg.OpPtyPut} {
		if _, code := call(t, h.admin, op, msg.PtyGet{ID: "s1"}, nil, nil); code != rpc.CodeForbidden {
			t.Errorf("admin %s: %q, want forbidden", op, code)
		}
	}
	if _, code := call(t, h.admin, msg.OpPtyDrop, msg.PtyDrop{ID: "s2"}, nil, nil); code != "" {
		t.Fatalf("admin drop: %q", code)
	}
	if sig := b.exited(t); sig != syscall.SIGHUP {
		t.Fatalf("bob's shell ended by %v", sig)
	}
	if _, code := call(t, h.admin, msg.OpPtyDrop, msg.PtyDrop{ID: "s2"}, nil, nil); code != msg.CodeNotFound {
		t.Fatalf("second admin drop: %q", code)
	}
	if got := h.list(h.grant("alice")); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("alice lists %q", got)
	}
}

// BenchmarkGet is the reattach path: one get (grant check, dup, the fd on
// the reply) per iteration, over a real socket.
func BenchmarkGet(b *testing.B) {
	h := newHarness(b, Config{})
	m, s := openPTY(b)
	defer s.Close()
	alice := h.grant("alice")
	if _, code := call(b, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: sessionInfo("s1", "alice"), Ticket: tk(b, h.key, sessionInfo("s1", "alice"), m)}, []*os.File{m}, nil); code != "" {
		b.Fatal(code)
	}
	m.Close()
	args := msg.PtyGet{Grant: alice, ID: "s1"}
	var rep msg.PtyGetReply
	b.ResetTimer()
	for range b.N {
		fds, code := call(b, h.web, msg.OpPtyGet, args, nil, &rep)
		if code != "" || len(fds) != 1 {
			b.Fatal(code)
		}
		fds[0].Close()
	}
}

// TestPutRefusedEnds: a put refused after its ticket checked out has its
// shell ended through Hangup, as a drop would, not only its pty closed
// (which a shell ignoring SIGHUP outlives, held by no one); an fd the
// ticket does not vouch for is only closed.
func TestPutRefusedEnds(t *testing.T) {
	type ino struct{ dev, ino uint64 }
	identity := func(f *os.File) ino {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return ino{st.Dev, st.Ino}
	}
	hung := make(chan ino, 8)
	h := newHarness(t, Config{MaxPerUser: 1, Hangup: func(_ context.Context, f *os.File) error {
		hung <- identity(f)
		return nil
	}})
	h.put(startShell(t), "00000000000000000000000000000001", "alice") // alice at her limit
	forged, _ := grant.Sign(grant.NewKey(), "bob", time.Now(), time.Hour)
	for _, tc := range []struct {
		name   string
		owner  string
		grant  msg.Grant
		ticket func(msg.SessionInfo, *os.File) msg.SessionTicket
		code   string
		ended  bool
	}{
		{"over the user's limit", "alice", h.grant("alice"), nil, msg.CodeDenied, true},
		{"grant for another user", "bob", h.grant("carol"), nil, msg.CodeBadGrant, true},
		{"forged grant", "bob", forged, nil, msg.CodeBadGrant, true},
		{"ticket for other info", "bob", h.grant("bob"), func(s msg.SessionInfo, f *os.File) msg.SessionTicket {
			s.UnixUser = "root"
			return tk(t, h.key, s, f)
		}, rpc.CodeBadRequest, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh := startShell(t)
			defer sh.master.Close()
			info := sessionInfo(strings.Repeat("f", 32), tc.owner)
			tkt := tk(t, h.key, info, sh.master)
			if tc.ticket != nil {
				tkt = tc.ticket(info, sh.master)
			}
			want := identity(sh.master)
			_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: tc.grant, Session: info, Ticket: tkt}, []*os.File{sh.master}, &msg.PtyPutReply{})
			if code != tc.code {
				t.Fatalf("put: %q, want %q", code, tc.code)
			}
			// The end comes before the answer.
			select {
			case got := <-hung:
				if !tc.ended || got != want {
					t.Errorf("hangup of %v, want ended %v (%v)", got, tc.ended, want)
				}
			default:
				if tc.ended {
					t.Errorf("the refused session's shell was not ended")
				}
			}
			if got := h.adminList(); len(got) != 1 {
				t.Errorf("store holds %v, want only the first session", got)
			}
		})
	}
}

// TestPutWithLimits: a put that carries policy's limits is stored with
// them and answered without asking policy (which, waiting on this put in
// one of its instances, might have none free to answer), negative limits
// are refused and the shell ended, and a put without limits still asks.
func TestPutWithLimits(t *testing.T) {
	var asked atomic.Int32
	fromPolicy := msg.Limits{Detached: 1000, Max: 2000}
	h := newHarnessPolicy(t, Config{}, func(grant.Key) PolicyChecker {
		return func(_ context.Context, a msg.CheckSessions) (msg.CheckSessionsReply, error) {
			asked.Add(1)
			rep := msg.CheckSessionsReply{}
			for _, s := range a.Sessions {
				rep.Verdicts = append(rep.Verdicts, msg.Verdict{ID: s.ID, Allow: true, Limits: fromPolicy})
			}
			return rep, nil
		}
	})
	for _, tc := range []struct {
		name   string
		limits *msg.Limits
		code   string
		want   msg.Limits
		asks   int32
	}{
		{"carried", &msg.Limits{Idle: 5, Detached: 60000, Max: 3600000}, "", msg.Limits{Idle: 5, Detached: 60000, Max: 3600000}, 0},
		{"none", nil, "", fromPolicy, 1},
		{"negative", &msg.Limits{Max: -1}, rpc.CodeBadRequest, msg.Limits{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked.Store(0)
			sh := startShell(t)
			info := sessionInfo("lim-"+tc.name, "alice")
			var rep msg.PtyPutReply
			_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: info,
				Ticket: tk(t, h.key, info, sh.master), Limits: tc.limits}, []*os.File{sh.master}, &rep)
			sh.master.Close()
			if code != tc.code {
				t.Fatalf("put: %q, want %q", code, tc.code)
			}
			if got := asked.Load(); got != tc.asks {
				t.Errorf("policy asked %d times, want %d", got, tc.asks)
			}
			if code != "" {
				if sig := sh.exited(t); sig == 0 {
					t.Error("a refused put's shell was not ended")
				}
				return
			}
			stored, known := h.store.Limits(info.ID)
			if rep.Limits != tc.want || stored != tc.want || !known {
				t.Errorf("limits: reply %+v, stored %+v (known %v), want %+v", rep.Limits, stored, known, tc.want)
			}
		})
	}
}
