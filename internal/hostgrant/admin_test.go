package hostgrant

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"sluice/msg"
)

// An admin grant and a user's are signed under different contexts: a
// host (or anyone on the way) that flips Admin on a user's grant, or off
// an admin's, holds a forgery.
func TestAdminGrants(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	pub := priv.Public().(ed25519.PublicKey)
	now := time.Now()
	user, err := Sign(priv, "alice", nil, "web1", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := SignAdmin(priv, "root", "web1", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !admin.Admin || user.Admin {
		t.Fatalf("admin flag: admin grant %v, user grant %v", admin.Admin, user.Admin)
	}
	for _, c := range []struct {
		name string
		g    msg.HostGrant
		host string
		want error
	}{
		{"admin", admin, "web1", nil},
		{"admin on another host", admin, "web2", ErrWrongHost},
		{"user made admin", func() msg.HostGrant { g := user; g.Admin = true; return g }(), "web1", ErrForged},
		{"admin made user", func() msg.HostGrant { g := admin; g.Admin = false; return g }(), "web1", ErrForged},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Verify(pub, c.host, c.g, now)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}
