package auth

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"sluice/internal/hostgrant"
	"sluice/msg"
	"sluice/rpc"
)

func TestHostGrant(t *testing.T) {
	e := newEnv(t, envOpts{})
	as, g := passkeyUser(t, e, "alice", "laptop")
	// No fleet key: refused, and nothing to pin.
	wantCode(t, call(e.web, msg.OpHostGrant, msg.HostGrantRequest{Grant: g, Host: "web1"}, &msg.HostGrantReply{}), msg.CodeFailed)
	wantCode(t, call(e.admin, msg.OpGatewayKey, msg.GatewayKey{}, &msg.GatewayKeyReply{}), msg.CodeNotFound)

	_, priv, _ := ed25519.GenerateKey(nil)
	e.svc.cfg.HostKey = priv
	var k msg.GatewayKeyReply
	if err := call(e.admin, msg.OpGatewayKey, msg.GatewayKey{}, &k); err != nil {
		t.Fatal(err)
	}
	pub := ed25519.PublicKey(k.Public)
	if !pub.Equal(priv.Public()) {
		t.Fatal("gateway-key is not the signing key's public half")
	}
	var r msg.HostGrantReply
	if err := call(e.web, msg.OpHostGrant, msg.HostGrantRequest{Grant: g, Host: "web1"}, &r); err != nil {
		t.Fatal(err)
	}
	hg := r.HostGrant
	if err := hostgrant.Verify(pub, "web1", hg, e.clock()); err != nil {
		t.Fatalf("host grant does not verify: %v", err)
	}
	if hg.User != "alice" || !bytes.Equal(hg.Credential, credID(as[0])) {
		t.Fatalf("host grant for %q/%x", hg.User, hg.Credential)
	}
	if err := hostgrant.Verify(pub, "web2", hg, e.clock()); err == nil {
		t.Fatal("host grant for web1 verifies for web2")
	}
	if d := time.Duration(hg.Expires-hg.Issued) * time.Millisecond; d > hostgrant.DefaultLifetime {
		t.Fatalf("host grant lives %v", d)
	}

	forged := g
	forged.User = "root"
	wantCode(t, call(e.web, msg.OpHostGrant, msg.HostGrantRequest{Grant: forged, Host: "web1"}, &msg.HostGrantReply{}), msg.CodeBadGrant)
	wantCode(t, call(e.web, msg.OpHostGrant, msg.HostGrantRequest{Grant: g, Host: ".host"}, &msg.HostGrantReply{}), rpc.CodeBadRequest)
	// A grant about to expire yields a host grant that expires with it.
	e.advance(time.Duration(g.Expires-e.clock().UnixMilli())*time.Millisecond - 10*time.Second)
	if err := call(e.web, msg.OpHostGrant, msg.HostGrantRequest{Grant: g, Host: "web1"}, &r); err != nil {
		t.Fatal(err)
	}
	if r.HostGrant.Expires > g.Expires {
		t.Fatalf("host grant outlives its grant: %d > %d", r.HostGrant.Expires, g.Expires)
	}
	// A disabled user's grant yields none.
	if err := call(e.admin, msg.OpUserDisable, msg.UserChange{User: "alice"}, &msg.UserChangeReply{}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, call(e.web, msg.OpHostGrant, msg.HostGrantRequest{Grant: g, Host: "web1"}, &msg.HostGrantReply{}), msg.CodeBadGrant)
}
