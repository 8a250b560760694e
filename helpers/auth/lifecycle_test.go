package auth

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/softauthn"
)

// passkeyUser enrolls user with one authenticator per name and signs in
// with the first; it returns the authenticators and that grant.
func passkeyUser(t *testing.T, e *env, user string, names ...string) ([]*softauthn.Authenticator, msg.Grant) {
	t.Helper()
	var as []*softauthn.Authenticator
	for _, n := range names {
		a := softauthn.New(rpID, origin)
		tok := e.enroll(user)
		var b msg.RegisterBeginReply
		if err := call(e.web, msg.OpRegisterBegin, msg.RegisterBegin{Token: tok}, &b); err != nil {
			t.Fatal(err)
		}
		cred, err := a.Register(b.Options)
		if err != nil {
			t.Fatal(err)
		}
		if err := call(e.web, msg.OpRegisterFinish, msg.RegisterFinish{Token: tok, State: b.State, Credential: cred, Name: n}, &msg.RegisterFinishReply{}); err != nil {
			t.Fatal(err)
		}
		as = append(as, a)
	}
	g, err := e.login(as[0], user)
	if err != nil {
		t.Fatal(err)
	}
	return as, g
}

func credID(a *softauthn.Authenticator) []byte { return a.Credentials()[0].ID }

func TestAdminLifecycle(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, envOpts{revoke: dir})
	check := revoke.NewChecker(dir)
	as, g1 := passkeyUser(t, e, "alice", "laptop", "phone")
	if !bytes.Equal(g1.Credential, credID(as[0])) {
		t.Fatalf("grant names passkey %x, signed in with %x", g1.Credential, credID(as[0]))
	}
	passkeyUser(t, e, "bob", "key")
	// No admin op has run yet: nothing is published, every grant fails.
	if err := check.Check(g1); !errors.Is(err, revoke.ErrUnavailable) {
		t.Fatalf("before any publication: %v", err)
	}
	if err := e.svc.PublishIfMissing(); err != nil {
		t.Fatal(err)
	}
	if err := check.Check(g1); err != nil {
		t.Fatalf("published empty list: %v", err)
	}

	var ul msg.UserListReply
	if err := call(e.admin, msg.OpUserList, msg.UserList{}, &ul); err != nil {
		t.Fatal(err)
	}
	if len(ul.Users) != 2 || ul.Users[0].Name != "alice" || ul.Users[0].Passkeys != 2 || ul.Users[0].LastUsed == 0 || ul.Users[1].Name != "bob" {
		t.Fatalf("user-list: %+v", ul)
	}
	var pl msg.PasskeyListReply
	if err := call(e.admin, msg.OpPasskeyList, msg.PasskeyList{User: "alice"}, &pl); err != nil {
		t.Fatal(err)
	}
	if len(pl.Passkeys) != 2 || pl.Passkeys[0].Created == 0 {
		t.Fatalf("passkey-list: %+v", pl)
	}
	names := map[string]bool{}
	for _, p := range pl.Passkeys {
		names[p.Name] = true
		if p.Current {
			t.Fatal("admin list marks a passkey current")
		}
	}
	if !names["laptop"] || !names["phone"] {
		t.Fatalf("passkey names: %v", names)
	}

	// Disable: the grant dies at the checkers, sign-in is refused.
	var uc msg.UserChangeReply
	if err := call(e.admin, msg.OpUserDisable, msg.UserChange{User: "alice"}, &uc); err != nil || !uc.Changed {
		t.Fatalf("disable: %+v %v", uc, err)
	}
	if err := check.Check(g1); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("disabled user's grant: %v", err)
	}
	_, err := e.login(as[1], "alice")
	wantCode(t, err, msg.CodeDenied)
	if err := call(e.admin, msg.OpUserDisable, msg.UserChange{User: "alice"}, &uc); err != nil || uc.Changed {
		t.Fatalf("disable twice: %+v %v", uc, err)
	}
	// Enable: new sign-ins work, the old grant stays dead.
	e.advance(time.Second)
	if err := call(e.admin, msg.OpUserEnable, msg.UserChange{User: "alice"}, &uc); err != nil || !uc.Changed {
		t.Fatalf("enable: %+v %v", uc, err)
	}
	g2, err := e.login(as[1], "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := check.Check(g2); err != nil {
		t.Fatalf("enabled user's new grant: %v", err)
	}
	if err := check.Check(g1); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("grant from before the disable: %v", err)
	}

	// Revoke the passkey g2 came from: g2 dies, a grant from the other lives.
	g3, err := e.login(as[0], "alice")
	if err != nil {
		t.Fatal(err)
	}
	var pr msg.PasskeyRevokeReply
	if err := call(e.admin, msg.OpPasskeyRevoke, msg.PasskeyRevoke{User: "alice", ID: credID(as[1])}, &pr); err != nil || pr.Remaining != 1 {
		t.Fatalf("revoke: %+v %v", pr, err)
	}
	if err := check.Check(g2); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("grant of the revoked passkey: %v", err)
	}
	if err := check.Check(g3); err != nil {
		t.Fatalf("grant of the other passkey: %v", err)
	}
	_, err = e.login(as[1], "")
	wantCode(t, err, msg.CodeDenied) // the user is found by handle, the passkey is not

	// Not found, and bad requests.
	wantCode(t, call(e.admin, msg.OpPasskeyRevoke, msg.PasskeyRevoke{User: "alice", ID: credID(as[1])}, &pr), msg.CodeNotFound)
	wantCode(t, call(e.admin, msg.OpPasskeyRevoke, msg.PasskeyRevoke{User: "bob", ID: credID(as[0])}, &pr), msg.CodeNotFound)
	wantCode(t, call(e.admin, msg.OpUserDisable, msg.UserChange{User: "nobody"}, &uc), msg.CodeNotFound)
	wantCode(t, call(e.admin, msg.OpPasskeyList, msg.PasskeyList{User: "nobody"}, &pl), msg.CodeNotFound)
	wantCode(t, call(e.admin, msg.OpUserRemove, msg.UserChange{User: "Bad\x1b]0;x"}, &uc), rpc.CodeBadRequest)
	wantCode(t, call(e.admin, msg.OpPasskeyRevoke, msg.PasskeyRevoke{User: "alice"}, &pr), rpc.CodeBadRequest)

	// Remove: every grant of hers fails, the user is gone.
	if err := call(e.admin, msg.OpUserRemove, msg.UserChange{User: "alice"}, &uc); err != nil {
		t.Fatal(err)
	}
	if err := check.Check(g3); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("removed user's grant: %v", err)
	}
	if err := call(e.admin, msg.OpUserList, msg.UserList{}, &ul); err != nil || len(ul.Users) != 1 || ul.Users[0].Name != "bob" {
		t.Fatalf("user-list after remove: %+v %v", ul, err)
	}
	_, err = e.login(as[0], "")
	wantCode(t, err, msg.CodeNotFound)
}

// A failed publication is reported, not swallowed: the admin must know
// the checkers have not heard.
func TestPublishFailureReported(t *testing.T) {
	e := newEnv(t, envOpts{revoke: "/nonexistent/sluice-revocation"})
	passkeyUser(t, e, "alice", "k")
	wantCode(t, call(e.admin, msg.OpUserDisable, msg.UserChange{User: "alice"}, &msg.UserChangeReply{}), msg.CodeFailed)
}

func TestWebPasskeys(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, envOpts{revoke: dir})
	as, g := passkeyUser(t, e, "alice", "laptop", "phone")
	bobs, _ := passkeyUser(t, e, "bob", "key")

	var pl msg.PasskeyListReply
	if err := call(e.web, msg.OpPasskeyList, msg.PasskeyList{Grant: g}, &pl); err != nil {
		t.Fatal(err)
	}
	if pl.User != "alice" || len(pl.Passkeys) != 2 {
		t.Fatalf("list: %+v", pl)
	}
	for _, p := range pl.Passkeys {
		if p.Current != bytes.Equal(p.ID, credID(as[0])) {
			t.Fatalf("current mark wrong: %+v", p)
		}
		if p.Current && p.LastUsed == 0 {
			t.Fatal("the passkey just used has no last-used time")
		}
	}
	// The frontend can only name a user through a grant it holds: forged,
	// another user's name on alice's grant, expired.
	forged, _ := grant.SignCredential(grant.NewKey(), "bob", credID(bobs[0]), e.clock(), time.Hour)
	renamed := g
	renamed.User = "bob"
	for name, bad := range map[string]msg.Grant{"forged": forged, "renamed": renamed, "none": {}} {
		t.Run(name, func(t *testing.T) {
			wantCode(t, call(e.web, msg.OpPasskeyList, msg.PasskeyList{Grant: bad}, &pl), msg.CodeBadGrant)
			wantCode(t, call(e.web, msg.OpPasskeyRevoke, msg.PasskeyRevoke{Grant: bad, ID: credID(bobs[0]), Last: true}, &msg.PasskeyRevokeReply{}), msg.CodeBadGrant)
			wantCode(t, call(e.web, msg.OpPasskeyAdd, msg.PasskeyAdd{Grant: bad}, &msg.EnrollReply{}), msg.CodeBadGrant)
		})
	}
	// alice's grant does not reach bob's passkey, and User is ignored.
	wantCode(t, call(e.web, msg.OpPasskeyRevoke, msg.PasskeyRevoke{Grant: g, User: "bob", ID: credID(bobs[0]), Last: true}, &msg.PasskeyRevokeReply{}), msg.CodeNotFound)

	// Add a third passkey with a token the grant bought.
	var tok msg.EnrollReply
	if err := call(e.web, msg.OpPasskeyAdd, msg.PasskeyAdd{Grant: g}, &tok); err != nil || tok.User != "alice" || tok.Token == "" {
		t.Fatalf("add: %+v %v", tok, err)
	}
	if tok.Expires > e.clock().Add(DefaultCeremonyTTL).UnixMilli() {
		t.Fatal("an add-passkey token outlives a ceremony")
	}
	third := softauthn.New(rpID, origin)
	if _, err := e.register(third, tok.Token); err != nil {
		t.Fatal(err)
	}

	// Remove the two others; the last one needs confirming.
	var pr msg.PasskeyRevokeReply
	for _, a := range []*softauthn.Authenticator{as[1], third} {
		if err := call(e.web, msg.OpPasskeyRevoke, msg.PasskeyRevoke{Grant: g, ID: credID(a)}, &pr); err != nil {
			t.Fatal(err)
		}
	}
	if pr.Remaining != 1 {
		t.Fatalf("remaining %d", pr.Remaining)
	}
	wantCode(t, call(e.web, msg.OpPasskeyRevoke, msg.PasskeyRevoke{Grant: g, ID: credID(as[0])}, &pr), msg.CodeDenied)
	if err := call(e.web, msg.OpPasskeyRevoke, msg.PasskeyRevoke{Grant: g, ID: credID(as[0]), Last: true}, &pr); err != nil || pr.Remaining != 0 {
		t.Fatalf("confirmed removal of the last: %+v %v", pr, err)
	}
	// The grant came from that passkey, so it is revoked now, in auth too.
	wantCode(t, call(e.web, msg.OpPasskeyList, msg.PasskeyList{Grant: g}, &pl), msg.CodeBadGrant)
	if err := revoke.NewChecker(dir).Check(g); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("published list: %v", err)
	}
}

func TestPasskeyName(t *testing.T) {
	for name, ok := range map[string]bool{
		"":                       true,
		"laptop":                 true,
		"Schlüssel 2":            true,
		"\x1b]52;c;aGk=\x07":     false,
		"a\u202eb":               false, // right-to-left override
		"x\nfake: line":          false,
		string(make([]byte, 65)): false,
		"\xff":                   false,
	} {
		if err := ValidPasskeyName(name); (err == nil) != ok {
			t.Errorf("ValidPasskeyName(%q) = %v", name, err)
		}
	}
}
