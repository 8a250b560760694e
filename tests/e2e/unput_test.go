package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/msg"
)

// TestCreateNeverPut is a compromised frontend that creates a session and
// never puts it: a process with the frontend's uid and public build ID
// calls create-shell-session and keeps the pty master to itself. The
// session must still be ptystore's (policy put it before answering):
// `sluicectl sessions` lists it and `sessions end` ends its shell, the
// fd the frontend holds notwithstanding. Before policy put sessions, the
// shell was not listed and `end` could not reach it.
func TestCreateNeverPut(t *testing.T) {
	users(t)
	g := directGrant(t, alice)
	before := listed(t)

	release := filepath.Join(env.Dir, "unput-"+t.Name())
	os.Remove(release)
	t.Cleanup(func() { os.WriteFile(release, nil, 0o644) })
	done := make(chan string, 1)
	go func() {
		// The child holds its fd (step "hold") until release exists. (A
		// failure to run it at all is reported from here with t.Fatalf,
		// as asFrontendThen does; the test then ends at the deadline.)
		fds, code, then := asFrontendThen(t, msg.ProtoWebToPolicy, msg.OpCreateShellSession,
			msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, nil, "hold:"+release)
		done <- fmt.Sprintf("code %q then %q fds=%d", code, then, fds)
	}()

	var s msg.SessionInfo
	for deadline := time.Now().Add(10 * time.Second); s.ID == ""; time.Sleep(50 * time.Millisecond) {
		for _, l := range listed(t) {
			if _, old := before[l.ID]; l.Owner == "alice" && !old {
				s = l
			}
		}
		if s.ID != "" {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("the child's create ended (%s) and ptystore lists no new session of alice's", r)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the session the frontend created and did not put is not listed by `sluicectl sessions`")
		}
	}
	if s.PID <= 0 || !procAlive(int(s.PID)) {
		t.Fatalf("session %+v: its shell is not running", s)
	}
	if out, err := sluicectl(t, "sessions", "end", s.ID); err != nil || !strings.Contains(out, "ended "+s.ID) {
		t.Fatalf("sluicectl sessions end: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(5 * time.Second); procAlive(int(s.PID)); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("shell %d still runs after `sessions end`, with the frontend holding its master", s.PID)
		}
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := <-done; !strings.Contains(r, "hold: ok") || !strings.Contains(r, "fds=1") {
		t.Fatalf("child: %s", r)
	}
}

// listed is `sluicectl sessions --json`, by id.
func listed(t *testing.T) map[string]msg.SessionInfo {
	t.Helper()
	out, err := sluicectl(t, "sessions", "--json")
	if err != nil {
		t.Fatalf("sluicectl sessions: %v\n%s", err, out)
	}
	var list []msg.SessionInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions --json %q: %v", out, err)
	}
	m := map[string]msg.SessionInfo{}
	for _, s := range list {
		m[s.ID] = s
	}
	return m
}
