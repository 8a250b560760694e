package e2e

import (
	"strings"
	"sync"
	"testing"

	"sluice/tests/softauthn"
)

var (
	carolOnce sync.Once
	carol     *softauthn.Authenticator
)

// auditor enrolls carol, whom the test's policy names an auditor.
func auditor(t *testing.T) {
	t.Helper()
	carolOnce.Do(func() {
		carol = softauthn.New("localhost", env.origin)
		c := connect(t)
		c.register(carol, enroll(t, "carol"))
		c.ws.Close()
	})
	if carol == nil || len(carol.Credentials()) == 0 {
		t.Fatal("carol's enrollment failed in an earlier test")
	}
}

// TestAuditorWatchesLive: carol, an auditor by the policy's "audit" line
// and allowed no shell, lists alice's live session and watches it
// read-only; alice's page lists her as an auditor; carol's keys and
// resizes never reach the shell. bob, no auditor, gets nothing. On main
// the page's audit messages were unknown.
func TestAuditorWatchesLive(t *testing.T) {
	users(t)
	auditor(t)
	writePolicy(t, policyFile+"audit carol\n")
	t.Cleanup(func() { writePolicy(t, policyFile) })

	owner := connect(t)
	owner.signIn(alice)
	id := sessionID(owner.create(80, 24))
	owner.typeText("echo before-$((2*2))\r")
	owner.until("before-4")

	b := connect(t)
	b.signIn(bob)
	for _, m := range []map[string]any{{"t": "audit-list"}, {"t": "audit-attach", "id": id}} {
		b.send(m)
		if e := b.expectError(); e["code"] != "denied" || e["op"] != m["t"] {
			t.Errorf("bob, no auditor, %v: %v", m["t"], e)
		}
	}

	c := connect(t)
	c.signIn(carol)
	c.send(map[string]any{"t": "audit-scope"})
	if ms := c.expect("audit-scope")["machines"].([]any); len(ms) != 1 || ms[0] != "*" {
		t.Fatalf("carol's audit scope %v", ms)
	}
	c.send(map[string]any{"t": "audit-list"})
	found := false
	for _, s := range c.expect("audit-sessions")["sessions"].([]any) {
		s := s.(map[string]any)
		if s["id"] == id && s["owner"] == "alice" {
			found = true
		}
	}
	if !found {
		t.Fatalf("alice's session %s not in carol's audit list", id)
	}
	c.send(map[string]any{"t": "audit-attach", "id": id})
	att := c.expect("attached")
	if att["mode"] != "read-only" {
		t.Fatalf("auditor attached as %v", att["mode"])
	}
	// The scrollback: an auditor sees what the session already showed.
	c.until("before-4")

	// alice's page hears that carol watches, as an auditor.
	for {
		m := owner.expect("viewers")
		if auditorIn(m["viewers"], "carol") {
			break
		}
	}
	owner.send(map[string]any{"t": "list"})
	for _, s := range owner.expect("sessions")["sessions"].([]any) {
		if s := s.(map[string]any); s["id"] == id && !auditorIn(s["viewers"], "carol") {
			t.Errorf("alice's list does not show carol as an auditor: %v", s["viewers"])
		}
	}

	owner.typeText("echo live-$((3*3))\r")
	c.until("live-9")

	c.typeText("echo carol-typed-$((5*5))\r")
	if e := c.expectError(); e["code"] != "forbidden" {
		t.Fatalf("auditor's input: %v", e)
	}
	c.send(map[string]any{"t": "resize", "cols": 33, "rows": 11})
	owner.typeText("stty size; echo owner-$((7*6))\r")
	owner.until("owner-42")
	c.until("owner-42")
	owner.drain()
	if strings.Contains(owner.all.String(), "carol-typed") || strings.Contains(owner.all.String(), "11 33") {
		t.Fatalf("the auditor's keys or resize reached the shell: %q", owner.all.String())
	}
	if !strings.Contains(owner.all.String(), "24 80") {
		t.Errorf("stty size after the auditor's resize: %q", owner.all.String())
	}

	// The audit line gone, carol can no longer attach.
	writePolicy(t, policyFile)
	c2 := connect(t)
	c2.signIn(carol)
	c2.send(map[string]any{"t": "audit-attach", "id": id})
	if e := c2.expectError(); e["code"] != "denied" {
		t.Fatalf("carol after her audit line went: %v", e)
	}
}

func auditorIn(viewers any, user string) bool {
	vs, _ := viewers.([]any)
	for _, v := range vs {
		if v, ok := v.(map[string]any); ok && v["user"] == user && v["auditor"] == true && v["mode"] == "read-only" {
			return true
		}
	}
	return false
}
