package ptystore

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/internal/revoke"
	"sluice/msg"
)

// Every web op checks the revocation list after the MAC: a grant of a
// disabled user, or from a revoked passkey, is refused at once, and so is
// every grant while the list cannot be read.
func TestRevokedGrants(t *testing.T) {
	h := newHarness(t, Config{})
	dir := t.TempDir()
	h.hd.Revoked = revoke.NewChecker(dir)
	if err := revoke.Write(dir, revoke.List{}); err != nil {
		t.Fatal(err)
	}
	cred := []byte("alice's laptop")
	g, err := grant.SignCredential(h.key, "alice", cred, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sh := startShell(t)
	var rep msg.PtyPutReply
	if _, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: g, Session: sessionInfo("s1", "alice"), Ticket: tk(t, h.key, sessionInfo("s1", "alice"), sh.master)}, []*os.File{sh.master}, &rep); code != "" {
		t.Fatalf("put: %s", code)
	}
	sh.master.Close()
	if _, _, code := h.get("s1", g, nil); code != "" {
		t.Fatalf("get before revocation: %s", code)
	}
	refused := func(what string) {
		t.Helper()
		if _, _, code := h.get("s1", g, nil); code != msg.CodeBadGrant {
			t.Fatalf("%s: get = %q, want %s", what, code, msg.CodeBadGrant)
		}
		if _, code := call(t, h.web, msg.OpPtyList, msg.PtyList{Grant: g}, nil, &msg.PtyListReply{}); code != msg.CodeBadGrant {
			t.Fatalf("%s: list = %q", what, code)
		}
		if _, code := call(t, h.web, msg.OpPtyShare, msg.PtyShare{Grant: g, ID: "s1", Mode: msg.ShareReadOnly}, nil, &msg.PtyShareReply{}); code != msg.CodeBadGrant {
			t.Fatalf("%s: share = %q", what, code)
		}
	}
	for _, tt := range []struct {
		name string
		l    revoke.List
	}{
		{"user disabled", revoke.List{Users: map[string]revoke.User{"alice": {Disabled: true, NotBefore: time.Now().UnixMilli()}}}},
		{"passkey revoked", revoke.List{Credentials: map[string]int64{hex.EncodeToString(cred): time.Now().UnixMilli()}}},
		{"user removed", revoke.List{Users: map[string]revoke.User{"alice": {NotBefore: time.Now().UnixMilli()}}}},
	} {
		if err := revoke.Write(dir, tt.l); err != nil {
			t.Fatal(err)
		}
		refused(tt.name)
	}
	os.Remove(filepath.Join(dir, revoke.FileName))
	refused("list missing")
	// The session itself is still held (ending it is the admin's choice).
	if got := h.adminList(); len(got) != 1 {
		t.Fatalf("admin list: %v", got)
	}
	if err := revoke.Write(dir, revoke.List{}); err != nil {
		t.Fatal(err)
	}
	if _, _, code := h.get("s1", g, nil); code != "" {
		t.Fatalf("get after the list is clear again: %s", code)
	}
}

// An authentic grant for a name auth never issues is refused, as policy
// refuses it (grant.Verifier): ptystore used to serve it.
func TestGrantForInvalidUser(t *testing.T) {
	h := newHarness(t, Config{})
	for _, user := range []string{"Alice", "-alice", "a:b"} {
		g, err := grant.Sign(h.key, user, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, code := call(t, h.web, msg.OpPtyList, msg.PtyList{Grant: g}, nil, &msg.PtyListReply{}); code != msg.CodeBadGrant {
			t.Errorf("list with a grant for %q = %q, want %s", user, code, msg.CodeBadGrant)
		}
	}
}
