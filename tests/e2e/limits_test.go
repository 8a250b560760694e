package e2e

import (
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestDetachedLimitEndsClosedTab: under sluice run, a session whose tab
// closes is ended by ptystore after the policy's detached limit (the
// frontend reports the last viewer leaving; the hangup helper ends the
// shell), and not before.
func TestDetachedLimitEndsClosedTab(t *testing.T) {
	users(t)
	t.Cleanup(func() { writePolicy(t, policyFile) })
	writePolicy(t, "limit detached 2s\n"+policyFile)
	c := connect(t)
	c.signIn(alice)
	c.create(80, 24)
	c.typeText("echo shell-$$-u''p\r")
	c.until("-up")
	m := regexp.MustCompile(`shell-(\d+)-up`).FindStringSubmatch(c.all.String())
	if m == nil {
		t.Fatalf("no shell pid in %q", c.all.String())
	}
	pid, _ := strconv.Atoi(m[1])

	closed := time.Now()
	c.ws.Close() // the tab closes
	time.Sleep(time.Second)
	if !procAlive(pid) {
		t.Fatalf("shell %d ended %v after the tab closed, before the 2 s detached limit", pid, time.Since(closed))
	}
	for procAlive(pid) {
		if time.Since(closed) > 20*time.Second {
			t.Fatalf("shell %d still running %v after the tab closed (detached limit 2 s)", pid, time.Since(closed))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(closed)
	t.Logf("detached limit 2s: shell gone %v after the tab closed", took)
	if took < 2*time.Second {
		t.Errorf("ended after %v, before the limit", took)
	}
}
