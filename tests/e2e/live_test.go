package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writePolicy installs text as the suite's policy the way an editor that
// renames would, without telling anyone.
func writePolicy(t *testing.T, text string) {
	t.Helper()
	path := env.Run.PolicyPath
	if err := os.WriteFile(path+".tmp", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyAppliesToLiveSessions: alice has a root shell and her rule is
// taken away. (a) She can no longer reattach to it, though the shell
// goes on under on-revoke detach; (b) `sluicectl policy check` lists the
// session a file would end, and `sluicectl policy apply` ends it, her
// attached page seeing the end. On main before this, the reattach worked
// and nothing ended the session.
func TestPolicyAppliesToLiveSessions(t *testing.T) {
	users(t)
	t.Cleanup(func() { writePolicy(t, policyFile) })
	c := connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	c.typeText("echo shell-$$-u''p\r")
	c.until("-up")
	m := regexp.MustCompile(`shell-(\d+)-up`).FindStringSubmatch(c.all.String())
	if m == nil {
		t.Fatalf("no shell pid in %q", c.all.String())
	}
	shellPID, _ := strconv.Atoi(m[1])

	c2 := connect(t)
	c2.signIn(alice)
	c2.attach(id, "")
	c2.ws.Close()

	// (a) The rule goes; ptystore may or may not have seen the file yet:
	// either way the attach is decided by the file as it is now.
	writePolicy(t, "on-revoke detach\nallow bob as root on .host\ndeny * as * on *\n")
	c3 := connect(t)
	c3.signIn(alice)
	c3.send(map[string]any{"t": "attach", "id": id, "share": "", "cols": 80, "rows": 24})
	if e := c3.expectError(); !strings.Contains(e["message"].(string), "may not") {
		t.Errorf("reattach after the rule went: %v", e)
	}
	c3.ws.Close()
	time.Sleep(time.Second) // two polls of the file by ptystore: detach keeps the shell
	if !procAlive(shellPID) {
		t.Fatalf("shell %d ended under on-revoke detach", shellPID)
	}
	// The page streaming it was detached too (TestPolicyDetachCutsOffPages
	// times it); once the rule is back it attaches again, for (b).
	c.expect("detached")
	writePolicy(t, policyFile)
	c.attach(id, "")

	// (b) check shows what a file would end, before it is applied.
	next := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(next, []byte("allow bob as root on .host\ndeny * as * on *\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := sluicectl(t, "policy", "check", "--json", next)
	if err != nil {
		t.Fatalf("policy check: %v\n%s", err, out)
	}
	var check struct {
		OnRevoke    string `json:"on_revoke"`
		WouldRevoke []struct {
			Session struct{ ID, Owner string }
			Action  string
		} `json:"would_revoke"`
	}
	if err := json.Unmarshal([]byte(out), &check); err != nil {
		t.Fatalf("policy check --json: %v\n%s", err, out)
	}
	found := false
	for _, r := range check.WouldRevoke {
		found = found || r.Session.ID == id && r.Action == "end"
	}
	if !found {
		t.Fatalf("policy check does not list %s to end: %s", id, out)
	}
	if !procAlive(shellPID) {
		t.Fatal("policy check ended the session")
	}

	start := time.Now()
	out, err = sluicectl(t, "policy", "apply", "--to", env.Run.PolicyPath, next)
	applied := time.Since(start)
	// ptystore's own poll of the file may get there first; either way
	// apply succeeds and the session ends.
	if err != nil || !strings.Contains(out, "installed ") {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	for {
		if m := c.next(); m["t"] == "exit" {
			break
		}
	}
	seen := time.Since(start)
	if procAlive(shellPID) {
		t.Errorf("shell %d still running after apply", shellPID)
	}
	t.Logf("policy apply returned after %v; the attached page saw the end after %v", applied, seen)
	if seen > 5*time.Second {
		t.Errorf("the session ended %v after apply; the bound is 5 s", seen)
	}
}
