package revoke

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"sluice/msg"
)

func grantOf(user string, cred []byte, issued int64) msg.Grant {
	return msg.Grant{User: user, Credential: cred, Issued: issued, Expires: issued + 1000}
}

func TestListCheck(t *testing.T) {
	l := List{
		Users: map[string]User{
			"dora": {Disabled: true, NotBefore: 100},
			"erin": {NotBefore: 100}, // enabled again, or removed and enrolled anew
		},
		Credentials: map[string]int64{"0a0b": 100},
	}
	parsed := func() *List {
		dir := t.TempDir()
		if err := Write(dir, l); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, FileName))
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}()
	tests := []struct {
		name string
		g    msg.Grant
		want error
	}{
		{"unlisted user", grantOf("alice", []byte{1}, 50), nil},
		{"disabled user, new grant", grantOf("dora", nil, 500), ErrRevoked},
		{"disabled user, old grant", grantOf("dora", nil, 50), ErrRevoked},
		{"re-enabled user, old grant", grantOf("erin", nil, 100), ErrRevoked},
		{"re-enabled user, new grant", grantOf("erin", nil, 101), nil},
		{"revoked passkey", grantOf("alice", []byte{0x0a, 0x0b}, 500), ErrRevoked},
		{"other passkey", grantOf("alice", []byte{0x0a, 0x0c}, 500), nil},
		{"prefix of a revoked passkey", grantOf("alice", []byte{0x0a}, 500), nil},
	}
	for _, tt := range tests {
		for _, list := range []struct {
			kind string
			l    *List
		}{{"in memory", &l}, {"parsed", parsed}} {
			err := list.l.Check(tt.g)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("%s (%s): Check = %v, want %v", tt.name, list.kind, err, tt.want)
			}
		}
	}
}

func TestPrune(t *testing.T) {
	l := List{
		Users:       map[string]User{"old": {NotBefore: 10}, "new": {NotBefore: 200}, "off": {Disabled: true, NotBefore: 10}},
		Credentials: map[string]int64{"01": 10, "02": 200},
	}
	l.Prune(100)
	if _, ok := l.Users["old"]; ok {
		t.Error("an old not-before mark survived")
	}
	if _, ok := l.Users["off"]; !ok {
		t.Error("a disabled user was pruned")
	}
	if _, ok := l.Users["new"]; !ok {
		t.Error("a recent not-before mark was pruned")
	}
	if _, ok := l.Credentials["01"]; ok || len(l.Credentials) != 1 {
		t.Errorf("credentials after prune: %v", l.Credentials)
	}
}

// The checker refuses everything without a readable list, and sees every
// new version of the file on the next call.
func TestChecker(t *testing.T) {
	dir := t.TempDir()
	c := NewChecker(dir)
	g := grantOf("alice", []byte{1, 2}, 500)
	if err := c.Check(g); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no file: Check = %v, want ErrUnavailable", err)
	}
	if err := Write(dir, List{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(g); err != nil {
		t.Fatalf("empty list: %v", err)
	}
	if _, changed, _ := c.Changed(); changed {
		t.Fatal("Changed reports a change of an unchanged file")
	}
	if err := Write(dir, List{Credentials: map[string]int64{"0102": 1}}); err != nil {
		t.Fatal(err)
	}
	if _, changed, _ := c.Changed(); !changed {
		t.Fatal("Changed missed a new version")
	}
	if err := c.Check(g); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after revoking the passkey: Check = %v", err)
	}
	if err := Write(dir, List{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(g); err != nil {
		t.Fatalf("after un-revoking: %v", err)
	}
	for name, content := range map[string]string{
		"garbage":       "{",
		"other version": `{"version":2}`,
		"bad hex":       `{"version":1,"credentials":{"zz":1}}`,
		"too big":       `{"version":1,"users":{"` + string(make([]byte, MaxSize)) + `":{}}}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, FileName), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := c.Check(g); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: Check = %v, want ErrUnavailable", name, err)
		}
	}
	os.Remove(filepath.Join(dir, FileName))
	if err := c.Check(g); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("removed file: Check = %v, want ErrUnavailable", err)
	}
	// Written files are readable by the other helpers whatever the umask.
	if err := Write(dir, List{}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("published file: %v, %v", st.Mode(), err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".revocations-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
