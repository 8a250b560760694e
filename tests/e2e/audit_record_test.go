package e2e

import (
	"strings"
	"testing"

	"sluice/msg"
)

// recordingsOf asks the page for the recordings list and returns it by id.
func (c *client) recordingsOf() map[string]map[string]any {
	c.t.Helper()
	c.send(map[string]any{"t": "recordings"})
	out := map[string]map[string]any{}
	for _, r := range c.expect("recordings")["recordings"].([]any) {
		r := r.(map[string]any)
		out[r["id"].(string)] = r
	}
	return out
}

// TestAuditorPlaysRecording: an auditor lists recorded sessions in the
// page and fetches one through the frontend, which gets it from the
// recording helper (rec-list, rec-open with the auditor's grant; the
// helper asks policy check-audit): the cast the page gets is the file
// byte for byte. The audit line's machine limits the recordings too; a
// user with no audit line is refused. On main the frontend had no source
// of recordings under `sluice run` ("recordings are not available on this
// server"), and policy did not serve check-audit.
func TestAuditorPlaysRecording(t *testing.T) {
	recording(t)
	auditor(t)
	writePolicy(t, recordPolicy+"audit carol on web1\n")

	c := connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	c.typeText("echo audited-$((6*7))\r")
	c.until("audited-42")

	// Scoped to web1: the .host recording is neither listed nor opened
	// (out of scope reads as absent).
	a := connect(t)
	a.signIn(carol)
	if _, ok := a.recordingsOf()[id]; ok {
		t.Fatalf("carol, auditor of web1 only, lists the .host recording %s", id)
	}
	a.send(map[string]any{"t": "recording", "id": id})
	if e := a.expectError(); e["code"] != msg.CodeNotFound || e["op"] != "recording" {
		t.Fatalf("carol on web1 opens a .host recording: %v", e)
	}

	// Auditor of every machine: the live recording is listed as live and
	// holds what was shown so far.
	writePolicy(t, recordPolicy+"audit carol\n")
	r, ok := a.recordingsOf()[id]
	if !ok || r["requester"] != "alice" || r["user"] != "root" || r["machine"] != ".host" || r["live"] != true {
		t.Fatalf("carol's list, live: %v", r)
	}
	a.send(map[string]any{"t": "recording", "id": id})
	if cast := a.expect("recording")["cast"].(string); !strings.Contains(cast, "audited-42") || !strings.HasPrefix(cast, `{"version":2`) {
		t.Fatalf("the live recording as the page got it: %q", cast)
	}

	c.exit()
	verify(t, id, msg.RecIntact)
	rec := export(t, id)
	r = a.recordingsOf()[id]
	if r == nil || r["live"] == true || int(r["size"].(float64)) != len(rec.raw) {
		t.Fatalf("carol's list, ended: %v (the file has %d bytes)", r, len(rec.raw))
	}
	a.send(map[string]any{"t": "recording", "id": id})
	if got := a.expect("recording"); got["id"] != id || got["cast"] != string(rec.raw) {
		t.Fatalf("the page's cast (%d bytes) is not the recording (%d bytes)", len(got["cast"].(string)), len(rec.raw))
	}

	// bob, with shells but no audit line, gets nothing.
	b := connect(t)
	b.signIn(bob)
	for _, m := range []map[string]any{{"t": "recordings"}, {"t": "recording", "id": id}} {
		b.send(m)
		if e := b.expectError(); e["code"] != msg.CodeDenied || e["op"] != m["t"] {
			t.Errorf("bob, no auditor, %v: %v", m["t"], e)
		}
	}
	// Nor does an unknown id, for the auditor.
	a.send(map[string]any{"t": "recording", "id": strings.Repeat("f", 32)})
	if e := a.expectError(); e["code"] != msg.CodeNotFound {
		t.Errorf("unknown recording: %v", e)
	}
}
