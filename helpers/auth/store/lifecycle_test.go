package store

import (
	"errors"
	"testing"
	"time"

	"sluice/internal/revoke"
	"sluice/msg"
)

// withPasskeys enrolls name and registers one passkey per id.
func withPasskeys(t *testing.T, s *Store, name string, ids ...string) {
	t.Helper()
	for i, id := range ids {
		tok := name + "-tok-" + id
		enroll(t, s, name, tok, t0.Add(time.Hour))
		if err := s.Register(hash(tok), Credential{ID: []byte(id), User: name, Data: []byte("d")}, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
}

func grantAt(user, cred string, at time.Time) msg.Grant {
	return msg.Grant{User: user, Credential: []byte(cred), Issued: at.UnixMilli()}
}

func TestUsersList(t *testing.T) {
	s := open(t, t.TempDir())
	withPasskeys(t, s, "bob", "b1", "b2")
	withPasskeys(t, s, "alice", "a1")
	enroll(t, s, "carol", "c-tok", t0.Add(time.Hour)) // no passkey yet
	if err := s.Use([]byte("b2"), hash("ch"), t0.Add(time.Hour), 0, []byte("d"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	us, err := s.Users()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name     string
		passkeys int
		lastUsed int64
	}{{"alice", 1, 0}, {"bob", 2, t0.Add(time.Minute).UnixMilli()}, {"carol", 0, 0}}
	if len(us) != len(want) {
		t.Fatalf("Users = %+v", us)
	}
	for i, w := range want {
		if us[i].Name != w.name || us[i].Passkeys != w.passkeys || us[i].LastUsed != w.lastUsed || us[i].Created != t0.UnixMilli() {
			t.Errorf("user %d = %+v, want %+v", i, us[i], w)
		}
	}
}

func TestDisableEnable(t *testing.T) {
	s := open(t, t.TempDir())
	withPasskeys(t, s, "alice", "a1")
	before := grantAt("alice", "a1", t0)
	at := t0.Add(time.Minute)
	changed, l, err := s.SetDisabled("alice", true, at)
	if err != nil || !changed {
		t.Fatalf("disable: %v %v", changed, err)
	}
	if err := l.Check(before); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("disabled: old grant Check = %v", err)
	}
	if u, _ := s.User("alice"); !u.Disabled {
		t.Fatal("user not marked disabled")
	}
	// A second disable changes nothing, the mark included.
	if changed, l2, err := s.SetDisabled("alice", true, at.Add(time.Second)); err != nil || changed || l2.Users["alice"].NotBefore != at.UnixMilli() {
		t.Fatalf("disabling twice: changed=%v %+v %v", changed, l2.Users, err)
	}
	changed, l, err = s.SetDisabled("alice", false, at.Add(time.Hour))
	if err != nil || !changed {
		t.Fatalf("enable: %v %v", changed, err)
	}
	if err := l.Check(before); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("enabled again: the grant from before the disable came back: %v", err)
	}
	if err := l.Check(grantAt("alice", "a1", at.Add(2*time.Hour))); err != nil {
		t.Fatalf("enabled again: a new grant is refused: %v", err)
	}
	// What is stored is what was returned.
	stored, err := s.Revocations()
	if err != nil || stored.Users["alice"] != l.Users["alice"] {
		t.Fatalf("stored list %+v, %v; returned %+v", stored, err, l)
	}
	if _, _, err := s.SetDisabled("nobody", true, at); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestRemoveUser(t *testing.T) {
	s := open(t, t.TempDir())
	withPasskeys(t, s, "alice", "a1", "a2")
	withPasskeys(t, s, "bob", "b1")
	enroll(t, s, "alice", "pending", t0.Add(time.Hour))
	l, err := s.RemoveUser("alice", t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(grantAt("alice", "a1", t0)); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("removed user's grant: %v", err)
	}
	if _, err := s.User("alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("user still there: %v", err)
	}
	for _, id := range []string{"a1", "a2"} {
		if _, err := s.Credential([]byte(id)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("passkey %s still there: %v", id, err)
		}
	}
	if _, _, err := s.Token(hash("pending"), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed user's enrollment token still good: %v", err)
	}
	if cs, err := s.Credentials("bob"); err != nil || len(cs) != 1 {
		t.Fatalf("bob's passkeys: %v %v", cs, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	// The name can be enrolled again; grants from then on are good.
	withPasskeys(t, s, "alice", "a3")
	l, _ = s.Revocations()
	if err := l.Check(grantAt("alice", "a3", t0.Add(time.Hour))); err != nil {
		t.Fatalf("re-enrolled user's new grant: %v", err)
	}
	if _, err := s.RemoveUser("nobody", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestRevokeCredential(t *testing.T) {
	s := open(t, t.TempDir())
	withPasskeys(t, s, "alice", "a1", "a2")
	withPasskeys(t, s, "bob", "b1")
	if _, _, err := s.RevokeCredential("alice", []byte("b1"), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking another user's passkey: %v", err)
	}
	if _, _, err := s.RevokeCredential("alice", []byte("zz"), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown passkey: %v", err)
	}
	left, l, err := s.RevokeCredential("alice", []byte("a1"), t0.Add(time.Minute))
	if err != nil || left != 1 {
		t.Fatalf("revoke: %d left, %v", left, err)
	}
	if err := l.Check(grantAt("alice", "a1", t0.Add(time.Hour))); !errors.Is(err, revoke.ErrRevoked) {
		t.Fatalf("grant of the revoked passkey: %v", err)
	}
	if err := l.Check(grantAt("alice", "a2", t0)); err != nil {
		t.Fatalf("grant of the other passkey: %v", err)
	}
	if cs, _ := s.Credentials("alice"); len(cs) != 1 || string(cs[0].ID) != "a2" {
		t.Fatalf("alice's passkeys: %+v", cs)
	}
	// Entries leave the list once every grant they could void expired.
	_, l, err = s.RevokeCredential("alice", []byte("a2"), t0.Add(grantLifetimeForTest()))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Credentials["6131"]; ok {
		t.Fatalf("a revocation older than any grant is still listed: %v", l.Credentials)
	}
	if _, ok := l.Credentials["6132"]; !ok {
		t.Fatalf("the new revocation is missing: %v", l.Credentials)
	}
}

func grantLifetimeForTest() time.Duration { return 13 * time.Hour }
