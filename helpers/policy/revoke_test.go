package policy_test

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

// Both ops check the revocation list after the MAC, on every call: policy
// runs one process per connection under systemd, so every call is a
// fresh read, and a long-lived handler sees each new list too.
func TestHandlerRevoked(t *testing.T) {
	f := setup(t, nil)
	dir := t.TempDir()
	f.h.Revoked = revoke.NewChecker(dir)
	cred := []byte{0xca, 0xfe}
	g, err := grant.SignCredential(f.key, "alice", cred, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := revoke.Write(dir, revoke.List{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.targets(t, g); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	for _, tt := range []struct {
		name, want string
		l          *revoke.List // nil: no list at all
	}{
		{"user disabled", "access revoked", &revoke.List{Users: map[string]revoke.User{"alice": {Disabled: true}}}},
		{"passkey revoked", "access revoked", &revoke.List{Credentials: map[string]int64{hex.EncodeToString(cred): 1}}},
		{"list missing", "revocation list cannot be read", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.l != nil {
				if err := revoke.Write(dir, *tt.l); err != nil {
					t.Fatal(err)
				}
			} else {
				os.Remove(filepath.Join(dir, revoke.FileName))
			}
			_, err := f.targets(t, g)
			if rpc.CodeOf(err) != msg.CodeBadGrant || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("allowed-targets: %v, want %s (%s)", err, msg.CodeBadGrant, tt.want)
			}
			_, fds, err := f.create(t, msg.CreateShellSession{Machine: ".host", User: "root", Grant: g})
			for _, fd := range fds {
				fd.Close()
			}
			if rpc.CodeOf(err) != msg.CodeBadGrant {
				t.Fatalf("create-shell-session: %v, want %s", err, msg.CodeBadGrant)
			}
		})
	}
}
