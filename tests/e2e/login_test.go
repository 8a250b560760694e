package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// loginAccount is the throwaway account policy lets bob use (suite_test.go).
const loginAccount = "sl13e2e"

func mkAccount(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make an account")
	}
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", loginAccount).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("pkill", "-KILL", "-u", loginAccount).Run()
		time.Sleep(100 * time.Millisecond)
		exec.Command("userdel", "-r", loginAccount).Run()
	})
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(loginAccount + ":not-" + loginAccount + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v: %s", err, out)
	}
}

// TestLoginRefusedOnPage: an account login and su would refuse is refused
// under sluice run too, and the reason is the error the page gets.
func TestLoginRefusedOnPage(t *testing.T) {
	users(t)
	for _, tc := range []struct {
		name  string
		setup []string
		want  string
	}{
		{"expired", []string{"usermod", "-e", "1", loginAccount}, "has expired"},
		{"locked", []string{"passwd", "-l", loginAccount}, "is locked"},
		{"nologin", nil, "logins are disabled on this host: sluice e2e maintenance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mkAccount(t)
			if tc.setup != nil {
				if out, err := exec.Command(tc.setup[0], tc.setup[1:]...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %v: %s", tc.setup, err, out)
				}
			} else {
				hostWide(t)
				if _, err := os.Lstat("/etc/nologin"); err == nil {
					t.Skip("/etc/nologin exists on this host; not touching it")
				}
				if err := os.WriteFile("/etc/nologin", []byte("sluice e2e maintenance\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Remove("/etc/nologin") })
			}
			c := connect(t)
			defer c.ws.Close()
			c.signIn(bob)
			c.send(map[string]any{"t": "create", "machine": ".host", "user": loginAccount, "cols": 80, "rows": 24})
			e := c.expectError()
			if msg, _ := e["message"].(string); e["code"] != "failed" || !strings.Contains(msg, tc.want) {
				t.Fatalf("create as %s (%s): %v, want a failure saying %q", loginAccount, tc.name, e, tc.want)
			}
		})
	}
}

// TestLoginSessionUnderRunner: the same account, allowed, gets a login:
// its tty by name (tmux), a utmp entry (who), login.defs' umask although
// the runner's is 0077.
func TestLoginSessionUnderRunner(t *testing.T) {
	users(t)
	mkAccount(t)
	c := connect(t)
	defer c.ws.Close()
	c.signIn(bob)
	c.send(map[string]any{"t": "create", "machine": ".host", "user": loginAccount, "cols": 80, "rows": 24})
	c.expect("attached")
	c.typeText("stat -c '<%U|%G|%a>' \"$(tty)\"\r")
	c.until("<" + loginAccount + "|tty|620>")
	c.typeText("echo \"<$(umask)>\"\r")
	c.until("<0022>")
	c.typeText("who | grep -c '^" + loginAccount + " ' | sed 's/^/<who /;s/$/>/'\r")
	c.until("<who 1>")
	c.typeText("tmux -L e2e new -d -s t 'sleep 30' && tmux -L e2e ls | cut -c1-2 | sed 's/^/<tmux /;s/$/>/'; tmux -L e2e kill-server\r")
	c.until("<tmux t:>")
	c.typeText("exit\r")
}

// hostWide skips a test that changes the whole host (/etc/nologin keeps
// every non-root login out, sshd's too) unless it runs alone: `go test
// ./...` runs packages side by side, so `make test` runs these afterwards,
// one package at a time, with SLUICE_TEST_HOSTWIDE=1.
func hostWide(t *testing.T) {
	t.Helper()
	if os.Getenv("SLUICE_TEST_HOSTWIDE") != "1" {
		t.Skip("writes /etc/nologin, which would refuse other packages' logins: make test runs it alone (SLUICE_TEST_HOSTWIDE=1, -p 1)")
	}
}
