package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/helpers/auth/store"
	"sluice/internal/grant"
	"sluice/internal/names"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/rpctest"
	"sluice/tests/softauthn"
)

const (
	rpID   = "localhost"
	origin = "http://localhost:8080"
)

// hello makes handshake lines for one side of a protocol with a made-up
// build ID: in-process tests have no manifest.
func hello(proto, role string) rpc.Hello {
	p, ok := msg.Lookup(proto)
	if !ok {
		panic(proto)
	}
	id := make([]byte, 32)
	copy(id, proto+role)
	return rpc.Hello{Intent: msg.Intent(p, role), BuildID: hex.EncodeToString(id)}
}

// env is one auth service behind a real socket, with a web client and an
// admin client.
type env struct {
	t        testing.TB
	dir      string
	sock     string
	svc      *Service
	store    *store.Lazy
	grantKey grant.Key
	web      *rpc.Client
	admin    *rpc.Client
	mu       sync.Mutex
	now      time.Time
}

type envOpts struct {
	dir        string    // state dir; default a temp dir
	adminAllow rpc.Allow // rpc allowlist of admin to auth; default uid 0
	admins     rpc.Allow // handler's admins (uid 0 always)
	store      store.Options
	sockDir    string // where the socket goes; default dir
	revoke     string // revocation directory; default none
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.sockDir == "" {
		o.sockDir = o.dir
	}
	if o.adminAllow.UIDs == nil && o.adminAllow.GIDs == nil {
		o.adminAllow = rpc.Allow{UIDs: []uint32{0}}
	}
	st := store.NewLazy(o.dir, o.store, nil)
	e := &env{t: t, dir: o.dir, store: st, grantKey: grant.NewKey(), now: time.Now()}
	sealKey := make([]byte, 32)
	rand.Read(sealKey)
	var err error
	e.svc, err = New(Config{
		RPID: rpID, Origins: []string{origin},
		GrantKey: e.grantKey, SealKey: sealKey,
		Admins: o.admins, RevocationDir: o.revoke,
		Now: e.clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	e.sock = filepath.Join(o.sockDir, "auth.sock")
	srv := &rpc.Server{Name: "auth", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Routes: []rpc.Route{
		{Client: hello(msg.ProtoWebToAuth, "client"), Server: hello(msg.ProtoWebToAuth, "server"),
			Allow: rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}, Handle: served(t, e.svc.Tables(), msg.ProtoWebToAuth)},
		{Client: hello(msg.ProtoAdminToAuth, "client"), Server: hello(msg.ProtoAdminToAuth, "server"),
			Allow: o.adminAllow, Handle: served(t, e.svc.Tables(), msg.ProtoAdminToAuth)},
	}}
	rpctest.Serve(t, srv, e.sock, 0o666)
	e.web = &rpc.Client{Path: e.sock, Hello: hello(msg.ProtoWebToAuth, "client"), Expect: hello(msg.ProtoWebToAuth, "server")}
	e.admin = &rpc.Client{Path: e.sock, Hello: hello(msg.ProtoAdminToAuth, "client"), Expect: hello(msg.ProtoAdminToAuth, "server")}
	return e
}

// served is the handler the helper's table gives a protocol.
func served(t testing.TB, tables []optable.Table, protocol string) rpc.HandlerFunc {
	t.Helper()
	tb, ok := optable.Find(tables, protocol)
	if !ok {
		t.Fatalf("no table for %q", protocol)
	}
	return tb.Handle
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

// call makes one request over the socket.
func call(cl *rpc.Client, op string, args, reply any) error {
	raw, err := msgpack.Marshal(args)
	if err != nil {
		return err
	}
	_, err = cl.Call(context.Background(), msg.Request{Op: op, Args: raw}, nil, reply)
	return err
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %s", code)
	}
	if got := rpc.CodeOf(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

func (e *env) enroll(user string) string {
	e.t.Helper()
	var r msg.EnrollReply
	if err := call(e.admin, msg.OpEnroll, msg.Enroll{User: user}, &r); err != nil {
		e.t.Fatalf("enroll %s: %v", user, err)
	}
	if r.User != user || r.Token == "" || r.Expires <= e.clock().UnixMilli() {
		e.t.Fatalf("enroll reply %+v", r)
	}
	return r.Token
}

// register runs register-begin, the authenticator, register-finish.
func (e *env) register(a *softauthn.Authenticator, token string) (msg.RegisterFinishReply, error) {
	var b msg.RegisterBeginReply
	if err := call(e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: token}, &b); err != nil {
		return msg.RegisterFinishReply{}, err
	}
	cred, err := a.Register(b.Options)
	if err != nil {
		e.t.Fatalf("authenticator: %v", err)
	}
	var f msg.RegisterFinishReply
	err = call(e.web, msg.OpRegisterFinish, msg.RegisterFinish{Token: token, State: b.State, Credential: cred}, &f)
	return f, err
}

// begin starts a login and has the authenticator answer it.
func (e *env) begin(a *softauthn.Authenticator, user string) (msg.LoginFinish, error) {
	var b msg.LoginBeginReply
	if err := call(e.web, msg.OpLoginBegin, msg.LoginBegin{User: user}, &b); err != nil {
		return msg.LoginFinish{}, err
	}
	as, err := a.Login(b.Options)
	if err != nil {
		return msg.LoginFinish{}, err
	}
	return msg.LoginFinish{State: b.State, Assertion: as}, nil
}

func (e *env) finish(lf msg.LoginFinish) (msg.Grant, error) {
	var r msg.LoginFinishReply
	err := call(e.web, msg.OpLoginFinish, lf, &r)
	return r.Grant, err
}

func (e *env) login(a *softauthn.Authenticator, user string) (msg.Grant, error) {
	lf, err := e.begin(a, user)
	if err != nil {
		return msg.Grant{}, err
	}
	return e.finish(lf)
}

func (e *env) mustLogin(a *softauthn.Authenticator, user, want string) {
	e.t.Helper()
	g, err := e.login(a, user)
	if err != nil {
		e.t.Fatalf("login: %v", err)
	}
	if err := grant.Verify(e.grantKey, g, e.clock()); err != nil {
		e.t.Fatalf("grant: %v", err)
	}
	if g.User != want {
		e.t.Fatalf("grant for %q, want %q", g.User, want)
	}
}

func TestFlow(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice := softauthn.New(rpID, origin)
	tok := e.enroll("alice")
	r, err := e.register(alice, tok)
	if err != nil {
		t.Fatal(err)
	}
	if r.User != "alice" || !bytes.Equal(r.CredentialID, alice.Credentials()[0].ID) {
		t.Fatalf("register reply %+v", r)
	}

	// Usernameless, then restricted to alice, then again: counters move.
	e.mustLogin(alice, "", "alice")
	e.mustLogin(alice, "alice", "alice")
	g, err := e.login(alice, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := grant.Verify(e.grantKey, g, e.clock()); err != nil {
		t.Fatal(err)
	}
	if err := grant.Verify(grant.NewKey(), g, e.clock()); !errors.Is(err, grant.ErrForged) {
		t.Fatalf("grant under another key: %v", err)
	}
	if got := time.UnixMilli(g.Expires).Sub(time.UnixMilli(g.Issued)); got != grant.DefaultLifetime {
		t.Fatalf("grant lifetime %v", got)
	}
	cr, _ := e.store.Credential(r.CredentialID)
	if cr.SignCount != 3 || cr.LastUsed == 0 {
		t.Fatalf("stored credential after 3 logins: count %d last used %d", cr.SignCount, cr.LastUsed)
	}

	// A second token for alice: the options exclude her existing passkey,
	// so the same authenticator refuses to make a second one.
	var b msg.RegisterBeginReply
	if err := call(e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: e.enroll("alice")}, &b); err != nil {
		t.Fatal(err)
	}
	if b.User != "alice" {
		t.Fatalf("begin for %q", b.User)
	}
	if _, err := alice.Register(b.Options); !errors.Is(err, softauthn.ErrExcluded) {
		t.Fatalf("second passkey on the same authenticator: %v", err)
	}
}

func TestSecondPasskeyAndUsers(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice1, alice2, bob := softauthn.New(rpID, origin), softauthn.New(rpID, origin), softauthn.New(rpID, origin)
	for _, r := range []struct {
		a    *softauthn.Authenticator
		user string
	}{{alice1, "alice"}, {alice2, "alice"}, {bob, "bob"}} {
		if _, err := e.register(r.a, e.enroll(r.user)); err != nil {
			t.Fatal(err)
		}
	}
	e.mustLogin(alice1, "", "alice")
	e.mustLogin(alice2, "alice", "alice")
	e.mustLogin(bob, "", "bob")
	// Restricted to alice, bob's authenticator has nothing on the list.
	if _, err := e.begin(bob, "alice"); !errors.Is(err, softauthn.ErrNoCredential) {
		t.Fatalf("bob's key for alice's login: %v", err)
	}
	// Both of alice's handles are the same user handle.
	if !bytes.Equal(alice1.Credentials()[0].UserHandle, alice2.Credentials()[0].UserHandle) {
		t.Fatal("one user, two user handles")
	}
	if bytes.Equal(alice1.Credentials()[0].UserHandle, bob.Credentials()[0].UserHandle) {
		t.Fatal("two users, one user handle")
	}
	// A user with a token but no passkey, and one unknown.
	e.enroll("carol")
	var b msg.LoginBeginReply
	wantCode(t, call(e.web, msg.OpLoginBegin, msg.LoginBegin{User: "carol"}, &b), msg.CodeNotFound)
	wantCode(t, call(e.web, msg.OpLoginBegin, msg.LoginBegin{User: "nobody"}, &b), msg.CodeNotFound)
}

// An enrollment "unless enrolled" (what `make run` asks at every start)
// makes a token only while the user has no passkey; a plain one always
// does, for a second passkey.
func TestEnrollUnlessEnrolled(t *testing.T) {
	e := newEnv(t, envOpts{})
	unless := func() msg.EnrollReply {
		t.Helper()
		var r msg.EnrollReply
		if err := call(e.admin, msg.OpEnroll, msg.Enroll{User: "dave", UnlessEnrolled: true}, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := unless()
	if r.Token == "" || r.Passkeys != 0 {
		t.Fatalf("no passkey yet: %+v", r)
	}
	if _, err := e.register(softauthn.New(rpID, origin), r.Token); err != nil {
		t.Fatal(err)
	}
	if r := unless(); r.Token != "" || r.Passkeys != 1 || r.User != "dave" {
		t.Fatalf("with a passkey: %+v", r)
	}
	var plain msg.EnrollReply
	if err := call(e.admin, msg.OpEnroll, msg.Enroll{User: "dave"}, &plain); err != nil || plain.Token == "" || plain.Passkeys != 1 {
		t.Fatalf("plain enroll with a passkey: %+v %v", plain, err)
	}
	// Asking is admin only, as enrolling is.
	wantCode(t, call(e.web, msg.OpEnroll, msg.Enroll{User: "dave", UnlessEnrolled: true}, &r), rpc.CodeBadRequest)
}

// TestLoginRefused: each case registers a fresh user, signs in once
// honestly, then tries something that must be refused, and finally checks
// the honest authenticator still works (a refusal changes nothing).
func TestLoginRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	other := newEnv(t, envOpts{}) // another deployment, another database
	tests := []struct {
		name string
		code string
		try  func(t *testing.T, a *softauthn.Authenticator, user string) error
	}{
		{"wrong key", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			b := a.Clone()
			b.WrongKey = true
			_, err := e.login(b, "")
			return err
		}},
		{"wrong origin", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			b := a.Clone()
			b.Origin = "http://evil.example:8080"
			_, err := e.login(b, "")
			return err
		}},
		{"no user verification", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			b := a.Clone()
			b.NoUV = true
			_, err := e.login(b, "")
			return err
		}},
		{"counter rollback", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			b := a.Clone()
			b.Credentials()[0].SignCount = 0
			_, err := e.login(b, "")
			return err
		}},
		{"clone used after the original", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			b := a.Clone()
			e.mustLogin(a, "", user)
			_, err := e.login(b, "")
			return err
		}},
		{"replayed state and assertion", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			lf, err := e.begin(a, "")
			if err != nil {
				return err
			}
			if _, err := e.finish(lf); err != nil {
				t.Fatalf("first use: %v", err)
			}
			_, err = e.finish(lf)
			return err
		}},
		{"replayed state, fresh assertion", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			var b msg.LoginBeginReply
			if err := call(e.web, msg.OpLoginBegin, msg.LoginBegin{}, &b); err != nil {
				return err
			}
			for i := range 2 {
				as, err := a.Login(b.Options)
				if err != nil {
					return err
				}
				var r msg.LoginFinishReply
				err = call(e.web, msg.OpLoginFinish, msg.LoginFinish{State: b.State, Assertion: as}, &r)
				if i == 1 {
					return err
				}
				if err != nil {
					t.Fatalf("first use: %v", err)
				}
			}
			return nil
		}},
		{"expired state", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			lf, err := e.begin(a, "")
			if err != nil {
				return err
			}
			e.advance(DefaultCeremonyTTL)
			_, err = e.finish(lf)
			return err
		}},
		{"tampered state", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			lf, err := e.begin(a, "")
			if err != nil {
				return err
			}
			lf.State[len(lf.State)/2] ^= 1
			_, err = e.finish(lf)
			return err
		}},
		{"state of another deployment", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			var b msg.LoginBeginReply
			if err := call(other.web, msg.OpLoginBegin, msg.LoginBegin{}, &b); err != nil {
				return err
			}
			as, err := a.Login(b.Options)
			if err != nil {
				return err
			}
			_, err = e.finish(msg.LoginFinish{State: b.State, Assertion: as})
			return err
		}},
		{"registration state as login state", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			var rb msg.RegisterBeginReply
			if err := call(e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: e.enroll(user)}, &rb); err != nil {
				return err
			}
			lf, err := e.begin(a, "")
			if err != nil {
				return err
			}
			lf.State = rb.State
			_, err = e.finish(lf)
			return err
		}},
		{"assertion for another challenge", msg.CodeDenied, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			first, err := e.begin(a, "")
			if err != nil {
				return err
			}
			second, err := e.begin(a, "")
			if err != nil {
				return err
			}
			first.Assertion = second.Assertion
			_, err = e.finish(first)
			return err
		}},
		{"passkey of another deployment", msg.CodeNotFound, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			stranger := softauthn.New(rpID, origin)
			if _, err := other.register(stranger, other.enroll(user)); err != nil {
				t.Fatal(err)
			}
			_, err := e.login(stranger, "")
			return err
		}},
		{"garbage assertion", rpc.CodeBadRequest, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			lf, err := e.begin(a, "")
			if err != nil {
				return err
			}
			lf.Assertion = []byte(`{"id":"x"}`)
			_, err = e.finish(lf)
			return err
		}},
		{"oversized assertion", rpc.CodeBadRequest, func(t *testing.T, a *softauthn.Authenticator, user string) error {
			lf, err := e.begin(a, "")
			if err != nil {
				return err
			}
			lf.Assertion = bytes.Repeat([]byte(" "), maxCredentialJSON+1)
			_, err = e.finish(lf)
			return err
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("user%d", i)
			a := softauthn.New(rpID, origin)
			if _, err := e.register(a, e.enroll(user)); err != nil {
				t.Fatal(err)
			}
			e.mustLogin(a, "", user)
			err := tt.try(t, a, user)
			wantCode(t, err, tt.code)
			if strings.HasPrefix(tt.name, "replayed") && !strings.Contains(err.Error(), "already used") {
				t.Fatalf("replay refused for another reason: %v", err)
			}
			e.mustLogin(a, user, user)
		})
	}
}

func TestRegisterRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := softauthn.New(rpID, origin)

	// Token reuse: spent by the first registration.
	tok := e.enroll("alice")
	if _, err := e.register(a, tok); err != nil {
		t.Fatal(err)
	}
	_, err := e.register(softauthn.New(rpID, origin), tok)
	wantCode(t, err, msg.CodeNotFound)

	// A second finish with the same begin: the token is gone.
	tok = e.enroll("bob")
	var b msg.RegisterBeginReply
	if err := call(e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: tok}, &b); err != nil {
		t.Fatal(err)
	}
	k1, k2 := softauthn.New(rpID, origin), softauthn.New(rpID, origin)
	c1, _ := k1.Register(b.Options)
	c2, _ := k2.Register(b.Options)
	if err := call(e.web, msg.OpRegisterFinish, msg.RegisterFinish{Token: tok, State: b.State, Credential: c1}, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, call(e.web, msg.OpRegisterFinish, msg.RegisterFinish{Token: tok, State: b.State, Credential: c2}, nil), msg.CodeNotFound)

	// Expired token.
	tok = e.enroll("carol")
	e.advance(DefaultEnrollTTL)
	_, err = e.register(softauthn.New(rpID, origin), tok)
	wantCode(t, err, msg.CodeNotFound)

	// Per-ceremony refusals, each with a fresh token.
	tests := []struct {
		name string
		code string
		mod  func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply)
	}{
		{"wrong origin", msg.CodeDenied, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			a.Origin = "https://localhost.evil"
			f.Credential, _ = a.Register(b.Options)
		}},
		{"no user verification", msg.CodeDenied, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			a.NoUV = true
			f.Credential, _ = a.Register(b.Options)
		}},
		{"other token", msg.CodeDenied, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			f.Token = e.enroll("dave")
		}},
		{"login state", msg.CodeDenied, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			var lb msg.LoginBeginReply
			call(e.web, msg.OpLoginBegin, msg.LoginBegin{}, &lb)
			f.State = lb.State
		}},
		{"expired state", msg.CodeDenied, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			e.advance(DefaultCeremonyTTL)
		}},
		{"tampered state", msg.CodeDenied, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			f.State[3] ^= 0x80
		}},
		{"garbage credential", rpc.CodeBadRequest, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			f.Credential = []byte(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{}}`)
		}},
		{"empty credential", rpc.CodeBadRequest, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			f.Credential = nil
		}},
		{"oversized state", rpc.CodeBadRequest, func(a *softauthn.Authenticator, f *msg.RegisterFinish, b msg.RegisterBeginReply) {
			f.State = make([]byte, maxState+1)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("reg%d", i)
			tok := e.enroll(user)
			var b msg.RegisterBeginReply
			if err := call(e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: tok}, &b); err != nil {
				t.Fatal(err)
			}
			if b.User != user {
				t.Fatalf("begin for %q", b.User)
			}
			a := softauthn.New(rpID, origin)
			cred, err := a.Register(b.Options)
			if err != nil {
				t.Fatal(err)
			}
			f := msg.RegisterFinish{Token: tok, State: b.State, Credential: cred}
			tt.mod(a, &f, b)
			wantCode(t, call(e.web, msg.OpRegisterFinish, f, nil), tt.code)
		})
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, envOpts{})
	long := strings.Repeat("a", names.MaxSluiceUser+1)
	tests := []struct {
		name string
		cl   *rpc.Client
		op   string
		args any
	}{
		{"unknown web op", e.web, msg.OpEnroll, msg.Enroll{User: "alice"}},
		{"unknown admin op", e.admin, msg.OpLoginBegin, msg.LoginBegin{}},
		{"args of the wrong type", e.web, msg.OpRegisterBegin, []int{1, 2}},
		{"empty user", e.admin, msg.OpEnroll, msg.Enroll{User: ""}},
		{"long user", e.admin, msg.OpEnroll, msg.Enroll{User: long}},
		{"upper case user", e.admin, msg.OpEnroll, msg.Enroll{User: "Alice"}},
		{"user with slash", e.admin, msg.OpEnroll, msg.Enroll{User: "a/b"}},
		{"user with NUL", e.admin, msg.OpEnroll, msg.Enroll{User: "a\x00b"}},
		{"user starting with a digit", e.admin, msg.OpEnroll, msg.Enroll{User: "1a"}},
		{"user starting with a dash", e.admin, msg.OpEnroll, msg.Enroll{User: "-a"}},
		{"negative ttl", e.admin, msg.OpEnroll, msg.Enroll{User: "alice", TTLSeconds: -1}},
		{"huge ttl", e.admin, msg.OpEnroll, msg.Enroll{User: "alice", TTLSeconds: 1 << 40}},
		{"short token", e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: "abc"}},
		{"token not base64url", e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: strings.Repeat("+", 43)}},
		{"bad login user", e.web, msg.OpLoginBegin, msg.LoginBegin{User: "../etc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, call(tt.cl, tt.op, tt.args, nil), rpc.CodeBadRequest)
		})
	}
	// A request frame that is not a msg.Request at all.
	_, _, err := e.web.CallRaw(context.Background(), []byte{0xc1}, nil)
	wantCode(t, err, rpc.CodeBadRequest)
	// A well-formed unknown token.
	wantCode(t, call(e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: strings.Repeat("A", 43)}, nil), msg.CodeNotFound)
	// Enroll with an explicit TTL.
	var r msg.EnrollReply
	if err := call(e.admin, msg.OpEnroll, msg.Enroll{User: "x.y-z_1", TTLSeconds: 60}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Expires != e.clock().Add(time.Minute).UnixMilli() {
		t.Fatalf("expires %d, want now+60s", r.Expires)
	}
}

// --- admin checks with a caller of another uid ------------------------------

const (
	childEnv      = "SLUICE_AUTH_TEST_CHILD"
	childHelloEnv = "SLUICE_AUTH_TEST_CHILD_HELLOS" // intent, id, server intent, server id
)

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		// The child: one enroll call as whoever we were started as.
		cl := &rpc.Client{Path: sock, Hello: hello(msg.ProtoAdminToAuth, "client"), Expect: hello(msg.ProtoAdminToAuth, "server")}
		if h := strings.Split(os.Getenv(childHelloEnv), "\n"); len(h) == 4 {
			cl.Hello = rpc.Hello{Intent: h[0], BuildID: h[1]}
			cl.Expect = rpc.Hello{Intent: h[2], BuildID: h[3]}
		}
		err := call(cl, msg.OpEnroll, msg.Enroll{User: "mallory"}, nil)
		if err == nil {
			fmt.Print("ok")
		} else {
			fmt.Print(rpc.CodeOf(err))
		}
		return
	}
	os.Exit(m.Run())
}

// asNobody runs this test binary as uid/gid 65534 to make one enroll call,
// and returns the error code it got ("ok" on success).
func asNobody(t *testing.T, exe, sock string, groups []uint32) string {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v (%s)", err, out)
	}
	return string(out)
}

// publicDir makes a directory another uid can reach, with a copy of the
// test binary in it (the go build cache is private to root).
func publicDir(t *testing.T) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-auth-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, "auth.test")
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, exe
}

func TestAdminOnly(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a caller as another uid (CI runs as root)")
	}
	pub, exe := publicDir(t)
	tests := []struct {
		name       string
		adminAllow rpc.Allow // the rpc allowlist
		admins     rpc.Allow // the handler's own check
		groups     []uint32  // nobody's supplementary groups
		want       string
	}{
		// The allowlist turns nobody away before the handler runs.
		{"refused by the allowlist", rpc.Allow{UIDs: []uint32{0}}, rpc.Allow{UIDs: []uint32{65534}}, nil, rpc.CodeForbidden},
		// Let through by a too-wide allowlist, refused by the handler.
		{"refused by the handler", rpc.Allow{UIDs: []uint32{0, 65534}}, rpc.Allow{}, nil, rpc.CodeForbidden},
		{"refused by the handler, group", rpc.Allow{GIDs: []uint32{4242}}, rpc.Allow{GIDs: []uint32{12345}}, []uint32{4242}, rpc.CodeForbidden},
		// Allowed in both places: by uid, and by (supplementary) group.
		{"admin by uid", rpc.Allow{UIDs: []uint32{65534}}, rpc.Allow{UIDs: []uint32{65534}}, nil, "ok"},
		{"admin by primary group", rpc.Allow{GIDs: []uint32{65534}}, rpc.Allow{GIDs: []uint32{65534}}, nil, "ok"},
		{"admin by supplementary group", rpc.Allow{GIDs: []uint32{4242}}, rpc.Allow{GIDs: []uint32{4242}}, []uint32{4242}, "ok"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sockDir := filepath.Join(pub, fmt.Sprint(i))
			os.Mkdir(sockDir, 0o755)
			e := newEnv(t, envOpts{adminAllow: tt.adminAllow, admins: tt.admins, sockDir: sockDir})
			if got := asNobody(t, exe, e.sock, tt.groups); got != tt.want {
				t.Fatalf("nobody's enroll: %q, want %q", got, tt.want)
			}
			// Root is an admin everywhere it is let in.
			if tt.adminAllow.UIDs != nil && tt.adminAllow.UIDs[0] == 0 {
				e.enroll("rootmade")
			}
		})
	}
}

// --- disk full ---------------------------------------------------------------

// TestDiskFull mounts a small tmpfs as the state directory, fills it, and
// checks that registration fails with a clear error while an existing
// passkey still signs in (the store's reserve), and that freeing space
// lets the same token register afterwards.
func TestDiskFull(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to mount a tmpfs (CI runs as root)")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=3m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	e := newEnv(t, envOpts{dir: dir, store: store.Options{Reserve: 512 << 10, MinFree: 256 << 10}})
	alice := softauthn.New(rpID, origin)
	if _, err := e.register(alice, e.enroll("alice")); err != nil {
		t.Fatal(err)
	}
	// Every read-write open keeps the reserve allocated past the end.
	var db syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, store.FileName), &db); err != nil {
		t.Fatal(err)
	}
	if db.Blocks*512 < db.Size+512<<10 {
		t.Fatalf("%d bytes allocated for a %d byte database, want the 512 KiB reserve past it", db.Blocks*512, db.Size)
	}
	bobTok := e.enroll("bob")

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling: %v", err)
			}
			break
		}
	}
	f.Close()

	bob := softauthn.New(rpID, origin)
	_, err = e.register(bob, bobTok)
	wantCode(t, err, msg.CodeFailed)
	if !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("registration error not clear: %v", err)
	}
	var r msg.EnrollReply
	wantCode(t, call(e.admin, msg.OpEnroll, msg.Enroll{User: "carol"}, &r), msg.CodeFailed)

	// Sign-ins write (counter, replay record) and still work.
	for range 20 {
		e.mustLogin(alice, "", "alice")
	}
	if err := e.store.Check(); err != nil {
		t.Fatal(err)
	}

	os.Remove(filler)
	if _, err := e.register(softauthn.New(rpID, origin), bobTok); err != nil {
		t.Fatalf("registration after freeing space: %v", err)
	}
	e.mustLogin(alice, "", "alice")
}

// Concurrent logins of one user over the socket all succeed and leave the
// counter at the number of logins.
func TestConcurrentLogins(t *testing.T) {
	e := newEnv(t, envOpts{})
	var keys []*softauthn.Authenticator
	for i := range 4 {
		a := softauthn.New(rpID, origin)
		if _, err := e.register(a, e.enroll(fmt.Sprintf("u%d", i))); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, a)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*5)
	for i, a := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				g, err := e.login(a, "")
				if err == nil && g.User != fmt.Sprintf("u%d", i) {
					err = fmt.Errorf("grant for %s", g.User)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, a := range keys {
		cr, _ := e.store.Credential(a.Credentials()[0].ID)
		if cr.SignCount != 5 {
			t.Errorf("counter %d after 5 logins", cr.SignCount)
		}
	}
}

// BenchmarkLogin is one whole usernameless sign-in over the socket:
// login-begin, the software authenticator, login-finish (two syncs of the
// store: replay record and counter).
func BenchmarkLogin(b *testing.B) {
	e := newEnv(b, envOpts{})
	a := softauthn.New(rpID, origin)
	if _, err := e.register(a, e.enroll("alice")); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := e.login(a, ""); err != nil {
			b.Fatal(err)
		}
	}
}
