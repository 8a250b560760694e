package hostile

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/pty"
	"sluice/msg"
	"sluice/tests/softauthn"
)

// tampered returns copies of g with one bit flipped in each field.
func tampered(g msg.Grant) map[string]msg.Grant {
	clone := func() msg.Grant {
		c := g
		c.Nonce, c.MAC = bytes.Clone(g.Nonce), bytes.Clone(g.MAC)
		return c
	}
	out := map[string]msg.Grant{}
	c := clone()
	c.User = string(g.User[0]^0x01) + g.User[1:]
	out["user"] = c
	c = clone()
	c.Issued ^= 1
	out["issued"] = c
	c = clone()
	c.Expires ^= 1 << 40
	out["expires"] = c
	c = clone()
	c.Nonce[7] ^= 0x10
	out["nonce"] = c
	c = clone()
	c.MAC[31] ^= 0x80
	out["mac"] = c
	return out
}

func targetNamed(t *testing.T, name string) *target {
	for _, tg := range helperTargetList(t) {
		if tg.name == name {
			return tg
		}
	}
	t.Fatalf("no target %s", name)
	return nil
}

// call sends one request with the target's lines and returns the answer.
func (tg *target) call(t *testing.T, body []byte) (Reply, Answer) {
	t.Helper()
	return tg.exchange(t, Cat(tg.client.Lines(), Frame(body)))
}

func wantError(t *testing.T, what string, r Reply, text string) {
	t.Helper()
	p, prefix := strings.CutSuffix(text, "…")
	if r.Kind != ErrorKind || (prefix && !strings.HasPrefix(r.Text, p)) || (!prefix && r.Text != text) {
		t.Fatalf("%s: got %v, want error frame %q", what, r, text)
	}
}

// TestGrantsPolicy: the policy helper with grants tampered with, expired,
// not yet valid, made with another key, and of a user the policy does not
// allow; and the one it allows, which gets a shell through the shell
// helper.
func TestGrantsPolicy(t *testing.T) {
	s := helpers(t)
	pol := targetNamed(t, "policy")
	ask := func(g msg.Grant) (Reply, Answer) {
		return pol.call(t, request(msg.OpCreateShellSession, msg.CreateShellSession{
			Machine: msg.HostMachine, User: "root", Args: []string{"/bin/true"}, Grant: g}))
	}
	alice := s.grantFor(t, "alice")
	r, a := ask(alice)
	if r.Kind != OK || len(a.FDs) != 1 {
		t.Fatalf("alice, allowed: %v with %d fds, want a payload with the pty master\n%s", r, len(a.FDs), s.logOf(pol.sock))
	}
	var rep msg.CreateShellSessionReply
	if err := msgpack.Unmarshal(r.Payload, &rep); err != nil || !strings.Contains(rep.Rule, "allow alice as root on .host") {
		t.Fatalf("reply %+v %v, want the rule that allowed it", rep, err)
	}

	r, _ = ask(s.grantFor(t, "bob"))
	wantError(t, "bob's grant for alice's rule", r, "denied: …")

	for field, g := range tampered(alice) {
		r, _ := ask(g)
		wantError(t, "one bit flipped in "+field, r, "bad-grant: grant not valid")
	}
	other, err := grant.Sign(grant.NewKey(), "alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r, _ = ask(other)
	wantError(t, "grant made with another key", r, "bad-grant: grant not valid")

	expired, _ := grant.Sign(s.key, "alice", time.Now().Add(-2*time.Hour), time.Hour)
	r, _ = ask(expired)
	wantError(t, "expired grant", r, "bad-grant: grant expired or not yet valid; sign in again")
	future, _ := grant.Sign(s.key, "alice", time.Now().Add(time.Hour), time.Hour)
	r, _ = ask(future)
	wantError(t, "grant issued in the future", r, "bad-grant: grant expired or not yet valid; sign in again")

	r, _ = ask(msg.Grant{User: "alice"})
	wantError(t, "grant without nonce or MAC", r, "bad-grant: grant not valid")
	pol.mustServeGood(t)
}

// TestGrantsPtystore: a session put by alice is invisible to bob, and no
// tampered, expired or foreign grant reaches it.
func TestGrantsPtystore(t *testing.T) {
	s := helpers(t)
	ps := targetNamed(t, "ptystore")
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close() // open, so ptystore sees a live terminal
	alice, bob := s.grantFor(t, "alice"), s.grantFor(t, "bob")
	id := fmt.Sprintf("hostile-grant-%d", os.Getpid())
	info := msg.SessionInfo{ID: id, Owner: "alice", UnixUser: "alice", Machine: msg.HostMachine,
		Created: time.Now().UnixMilli(), Sharing: msg.SharePrivate}

	put := func(g msg.Grant, owner string) Reply {
		in := info
		in.Owner = owner
		c, err := Dial(ps.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteFDs(Cat(putHello(ps).Lines(), Frame(request(msg.OpPtyPut, msg.PtyPut{Grant: g, Session: in, Ticket: s.ticketFor(t, in, int(master.Fd()))}))),
			[]int{int(master.Fd())}); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		a := c.ReadAll()
		a.CloseFDs()
		return a.Parse()
	}
	r := put(bob, "alice")
	wantError(t, "bob puts a session as alice", r, `bad-grant: grant is for "bob", session owner is "alice"`)
	for field, g := range tampered(alice) {
		wantError(t, "put with one bit flipped in "+field, put(g, "alice"), "bad-grant: grant not valid")
	}
	if r := put(alice, "alice"); r.Kind != OK {
		t.Fatalf("alice's put: %v\n%s", r, s.logOf(ps.sock))
	}
	master.Close() // ptystore holds its own copy now
	defer func() {
		// No process has the pty as its terminal: the hangup helper has
		// nothing to end, and the drop succeeds.
		if r, _ := ps.call(t, request(msg.OpPtyDrop, msg.PtyDrop{Grant: alice, ID: id})); r.Kind != OK {
			t.Errorf("alice drops her session: %v\n%s", r, s.logOf(ps.sock))
		}
	}()

	get := func(g msg.Grant) (Reply, Answer) {
		return ps.call(t, request(msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id}))
	}
	r, a := get(alice)
	if r.Kind != OK || len(a.FDs) != 1 {
		t.Fatalf("alice's get: %v with %d fds", r, len(a.FDs))
	}
	r, a = get(bob)
	wantError(t, "bob's get of alice's session", r, fmt.Sprintf("not-found: no session %q", id))
	if len(a.FDs) != 0 {
		t.Fatalf("bob got %d fds", len(a.FDs))
	}
	for field, g := range tampered(alice) {
		r, _ := get(g)
		wantError(t, "get with one bit flipped in "+field, r, "bad-grant: grant not valid")
	}
	expired, _ := grant.Sign(s.key, "alice", time.Now().Add(-2*time.Hour), time.Hour)
	r, _ = get(expired)
	wantError(t, "get with an expired grant", r, "bad-grant: grant expired or not yet valid; sign in again")
	other, _ := grant.Sign(grant.NewKey(), "alice", time.Now(), time.Hour)
	r, _ = get(other)
	wantError(t, "get with a grant of another key", r, "bad-grant: grant not valid")

	// Bob's list does not show it; dropping it as bob does nothing.
	r, _ = ps.call(t, request(msg.OpPtyList, msg.PtyList{Grant: bob}))
	var list msg.PtyListReply
	if r.Kind != OK || msgpack.Unmarshal(r.Payload, &list) != nil || len(list.Sessions) != 0 {
		t.Fatalf("bob's list: %v %+v", r, list)
	}
	r, _ = ps.call(t, request(msg.OpPtyDrop, msg.PtyDrop{Grant: bob, ID: id}))
	wantError(t, "bob drops alice's session", r, fmt.Sprintf("not-found: no session %q", id))
	if r, _ := get(alice); r.Kind != OK {
		t.Fatalf("alice's session after bob's drop: %v", r)
	}
	ps.mustServeGood(t)
}

// TestCeremonyReplay: a passkey login's sealed state is good once. A
// replay, a state with one bit flipped, and a registration state used for
// a login are refused, on the real sluice-auth.
func TestCeremonyReplay(t *testing.T) {
	s := helpers(t)
	web := targetNamed(t, "auth")
	admin := &target{name: "auth admin", sock: web.sock, pid: web.pid,
		client: s.hello(t, msg.Admin, msg.ProtoAdminToAuth, "client"),
		server: s.hello(t, msg.Auth, msg.ProtoAdminToAuth, "server")}
	decode := func(what string, r Reply, v any) {
		t.Helper()
		if r.Kind != OK {
			t.Fatalf("%s: %v\n%s", what, r, s.logOf(web.sock))
		}
		if err := msgpack.Unmarshal(r.Payload, v); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	user := fmt.Sprintf("replay%d", os.Getpid()%100000)
	var enr msg.EnrollReply
	r, _ := admin.call(t, request(msg.OpEnroll, msg.Enroll{User: user}))
	decode("enroll", r, &enr)

	key := softauthn.New(rpID, origin)
	var rb msg.RegisterBeginReply
	r, _ = web.call(t, request(msg.OpRegisterBegin, msg.RegisterBegin{Token: enr.Token}))
	decode("register-begin", r, &rb)
	cred, err := key.Register(rb.Options)
	if err != nil {
		t.Fatal(err)
	}
	var rf msg.RegisterFinishReply
	r, _ = web.call(t, request(msg.OpRegisterFinish, msg.RegisterFinish{Token: enr.Token, State: rb.State, Credential: cred}))
	decode("register-finish", r, &rf)

	begin := func() msg.LoginFinish {
		var lb msg.LoginBeginReply
		r, _ := web.call(t, request(msg.OpLoginBegin, msg.LoginBegin{User: user}))
		decode("login-begin", r, &lb)
		as, err := key.Login(lb.Options)
		if err != nil {
			t.Fatal(err)
		}
		return msg.LoginFinish{State: lb.State, Assertion: as}
	}
	finish := func(lf msg.LoginFinish) Reply {
		r, _ := web.call(t, request(msg.OpLoginFinish, lf))
		return r
	}

	// A state with one bit flipped, anywhere, is not valid.
	lf := begin()
	for _, i := range []int{0, 5, len(lf.State) / 2, len(lf.State) - 1} {
		bad := lf
		bad.State = bytes.Clone(lf.State)
		bad.State[i] ^= 0x04
		wantError(t, fmt.Sprintf("login state with byte %d flipped", i), finish(bad),
			"denied: the sign-in attempt is not valid (tampered with, or from another ceremony); start again")
	}
	// The registration's state is not a login's.
	wrongKind := lf
	wrongKind.State = rb.State
	wantError(t, "registration state for a login", finish(wrongKind),
		"denied: the sign-in attempt is not valid (tampered with, or from another ceremony); start again")

	// The untouched one works once, and only once.
	var fin msg.LoginFinishReply
	decode("login-finish", finish(lf), &fin)
	if err := grant.Verify(s.key, fin.Grant, time.Now()); err != nil || fin.Grant.User != user {
		t.Fatalf("grant %+v: %v", fin.Grant, err)
	}
	wantError(t, "replayed login", finish(lf), "denied: this sign-in attempt was already used; start again")
	// Replayed registration: the enrollment token is spent.
	r, _ = web.call(t, request(msg.OpRegisterFinish, msg.RegisterFinish{Token: enr.Token, State: rb.State, Credential: cred}))
	if r.Kind != ErrorKind || r.Code != msg.CodeNotFound {
		t.Fatalf("replayed registration: %v, want not-found", r)
	}
	web.mustServeGood(t)
}
