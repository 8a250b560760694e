package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestShareRevokedLive: a change of sharing applies to viewers already
// attached, and a share shows only what the shell printed after it unless
// the owner includes the history. On main before issue 12 the viewer saw
// the owner's earlier output, and kept typing after read-only and after
// private.
func TestShareRevokedLive(t *testing.T) {
	users(t)
	owner := connect(t)
	owner.signIn(alice)
	id := sessionID(owner.create(80, 24))
	owner.typeText("echo secret-$((6*7))\r")
	owner.until("secret-42")

	owner.send(map[string]any{"t": "share", "id": id, "mode": "read-write"})
	tok := owner.expect("shared")["token"].(string)
	bob1 := connect(t)
	bob1.signIn(bob)
	if m := bob1.attach(id, tok); m["mode"] != "read-write" {
		t.Fatalf("attached as %v", m["mode"])
	}
	owner.typeText("echo shared-$((2*3))\r")
	bob1.until("shared-6")
	if strings.Contains(bob1.all.String(), "secret") {
		t.Fatalf("a share without history showed output from before it: %q", bob1.all.String())
	}
	bob1.typeText("echo bob-typed-$((1+2))\r")
	owner.until("bob-typed-3")

	// Read-only: bob keeps watching and can no longer type, as soon as
	// the owner's page has heard "shared".
	start := time.Now()
	owner.send(map[string]any{"t": "share", "id": id, "mode": "read-only"})
	owner.expect("shared")
	bob1.typeText("echo bob-ro-$((4+4))\r")
	if m := bob1.expect("mode"); m["mode"] != "read-only" {
		t.Fatalf("mode message %v", m)
	}
	t.Logf("read-write -> read-only reached the viewer in %v", time.Since(start))
	if e := bob1.expectError(); e["code"] != "forbidden" {
		t.Fatalf("input after read-only: %v", e)
	}
	owner.typeText("echo owner-$((5+5))\r")
	owner.until("owner-10")
	bob1.until("owner-10")

	// Read-write again, history included: a new viewer sees it all; the
	// one lowered to read-only is not raised by it.
	owner.send(map[string]any{"t": "share", "id": id, "mode": "read-write", "history": true})
	tok2 := owner.expect("shared")["token"].(string)
	bob2 := connect(t)
	bob2.signIn(bob)
	if m := bob2.attach(id, tok2); m["mode"] != "read-write" {
		t.Fatalf("attached as %v", m["mode"])
	}
	bob2.until("secret-42")
	// Refusals are reported once a second at most; the owner's output
	// below is what shows these keys went nowhere.
	bob1.typeText("echo bob-raised-$((1+1))\r")

	// Private: both are detached with a message, and their keys go nowhere.
	start = time.Now()
	owner.send(map[string]any{"t": "share", "id": id, "mode": "private"})
	owner.expect("shared")
	bob2.typeText("echo bob-gone-$((3*3))\r")
	for _, c := range []*client{bob2, bob1} {
		if m := c.expect("revoked"); m["id"] != id || m["message"] == "" {
			t.Fatalf("revoked message %v", m)
		}
	}
	t.Logf("private reached both viewers in %v", time.Since(start))
	if e := bob2.expectError(); e["code"] != "forbidden" {
		t.Fatalf("input after private: %v", e)
	}
	owner.typeText("echo owner-$((7*7))\r")
	owner.until("owner-49")
	owner.drain()
	for _, leak := range []string{"bob-ro-8", "bob-raised-2", "bob-gone-9", "bob-ro-", "bob-raised-", "bob-gone-"} {
		if strings.Contains(owner.all.String(), leak) {
			t.Fatalf("a revoked or read-only viewer's keys reached the shell: %q", leak)
		}
	}
	bob2.send(map[string]any{"t": "attach", "id": id, "share": tok2, "cols": 80, "rows": 24})
	if e := bob2.expectError(); e["code"] != "bad-grant" {
		t.Fatalf("attach with a revoked token: %v", e)
	}
}
