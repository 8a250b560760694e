package auth

import (
	"crypto/ed25519"
	"os"
	"os/user"
	"strconv"
	"testing"

	"sluice/internal/hostgrant"
	"sluice/msg"
	"sluice/rpc"
)

// An admin (here root, the kernel's word) gets an admin host grant named
// after their account; it verifies for its host only, and a user's
// grant is never an admin one.
func TestHostAdminGrant(t *testing.T) {
	e := newEnv(t, envOpts{})
	wantCode(t, call(e.admin, msg.OpHostAdminGrant, msg.HostAdminGrantRequest{Host: "web1"}, &msg.HostGrantReply{}), msg.CodeFailed)
	_, priv, _ := ed25519.GenerateKey(nil)
	e.svc.cfg.HostKey = priv
	pub := priv.Public().(ed25519.PublicKey)
	var r msg.HostGrantReply
	if err := call(e.admin, msg.OpHostAdminGrant, msg.HostAdminGrantRequest{Host: "web1"}, &r); err != nil {
		t.Fatal(err)
	}
	if err := hostgrant.Verify(pub, "web1", r.HostGrant, e.clock()); err != nil {
		t.Fatalf("admin host grant does not verify: %v", err)
	}
	me, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Fatal(err)
	}
	if !r.HostGrant.Admin || r.HostGrant.User != me.Username {
		t.Fatalf("admin host grant %+v, want admin %s", r.HostGrant, me.Username)
	}
	wantCode(t, call(e.admin, msg.OpHostAdminGrant, msg.HostAdminGrantRequest{Host: ".host"}, &msg.HostGrantReply{}), rpc.CodeBadRequest)
	// Not on the web protocol: the frontend cannot ask for one.
	wantCode(t, call(e.web, msg.OpHostAdminGrant, msg.HostAdminGrantRequest{Host: "web1"}, &msg.HostGrantReply{}), rpc.CodeBadRequest)
}
