package shell_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/helpers/shell"
	"sluice/msg"
	"sluice/rpc"
)

// throwaway makes a local account for one test and removes it after,
// home and all. With a password, so that locking it means something.
func throwaway(t *testing.T) shell.Account {
	t.Helper()
	requireRoot(t)
	var b [4]byte
	rand.Read(b[:])
	name := "sl13" + hex.EncodeToString(b[:])
	run(t, "useradd", "-m", "-s", "/bin/bash", name)
	t.Cleanup(func() {
		// Whatever the test left running as the account goes first.
		exec.Command("pkill", "-KILL", "-u", name).Run()
		time.Sleep(100 * time.Millisecond)
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil {
			t.Logf("userdel %s: %v: %s", name, err, out)
		}
	})
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":not-" + name + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v: %s", err, out)
	}
	acct, err := shell.LookupAccount(name)
	if err != nil {
		t.Fatal(err)
	}
	return acct
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// nologin puts text in /etc/nologin for one test. A host that has one
// already is not a place to run this test: its own would be removed.
//
// /etc/nologin keeps every non-root login on the host out, sshd's and other
// packages' tests' too, so this runs only alone: `go test ./...` runs
// packages side by side, and `make test` runs the host-wide tests
// afterwards, one package at a time, with SLUICE_TEST_HOSTWIDE=1.
func nologin(t *testing.T, text string) {
	t.Helper()
	if os.Getenv("SLUICE_TEST_HOSTWIDE") != "1" {
		t.Skip("writes /etc/nologin, which would refuse other packages' logins: make test runs it alone (SLUICE_TEST_HOSTWIDE=1, -p 1)")
	}
	const path = "/etc/nologin"
	if _, err := os.Lstat(path); err == nil {
		t.Skipf("%s exists on this host; not touching it", path)
	}
	if err := os.WriteFile(path, []byte(text+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// processesOf lists the pids running as uid.
func processesOf(uid uint32) []string {
	ents, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		if m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindSubmatch(b); m != nil && string(m[1]) == strconv.Itoa(int(uid)) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// TestLoginRefusals: what login and su refuse, sluice refuses, before
// anything runs as the account, and says why in words the page shows
// (policy passes a "failed" message from the shell helper on verbatim).
func TestLoginRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, user string)
		want  string
	}{
		{"expired", func(t *testing.T, user string) { run(t, "usermod", "-e", "1", user) }, "has expired"},
		{"passwd -l", func(t *testing.T, user string) { run(t, "passwd", "-l", user) }, "is locked"},
		{"usermod -L", func(t *testing.T, user string) { run(t, "usermod", "-L", user) }, "is locked"},
		{"nologin", func(t *testing.T, user string) { nologin(t, "down for maintenance until noon") }, "logins are disabled on this host: down for maintenance until noon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acct := throwaway(t)
			tc.setup(t, acct.Name)
			cl := serve(t, embedded())
			fds, err := cl.Call(context.Background(), request(t, msg.OpOpenShell,
				msg.OpenShell{Machine: msg.HostMachine, User: acct.Name}), nil, &msg.OpenShellReply{})
			for _, f := range fds {
				f.Close()
			}
			if err == nil {
				t.Fatalf("%s: a shell was opened", tc.name)
			}
			if rpc.CodeOf(err) != msg.CodeFailed || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want code %s mentioning %q", err, msg.CodeFailed, tc.want)
			}
			// Same through the backend directly, which says it is a refusal.
			if _, err := embedded().Open(context.Background(), msg.OpenShell{Machine: msg.HostMachine, User: acct.Name}); !errors.Is(err, shell.ErrRefused) {
				t.Errorf("backend: %v, want a refusal", err)
			}
			if pids := processesOf(acct.UID); len(pids) != 0 {
				t.Errorf("processes of %s after a refusal: %v", acct.Name, pids)
			}
		})
	}
}

// TestLoginSession: a normal account gets a login: its tty, umask,
// loginuid, a utmp entry, and a tty that tmux can open by name. When the
// shell ends, the tty is root's again.
func TestLoginSession(t *testing.T) {
	acct := throwaway(t)
	// The runner starts the helper with umask 0077; the login's is
	// login.defs' (022 on Debian), not the helper's.
	old := syscall.Umask(0o077)
	term := open(t, msg.OpenShell{Machine: msg.HostMachine, User: acct.Name})
	syscall.Umask(old)
	uid := strconv.Itoa(int(acct.UID))

	out := expect(t, term, `stat -c '<%U|%G|%a>' "$(tty)"; tty; echo do''ne`, "done")
	if want := "<" + acct.Name + "|tty|620>"; !strings.Contains(out, want) {
		t.Errorf("tty: %q, want %s", out, want)
	}
	ttyPath := regexp.MustCompile(`/dev/pts/\d+`).FindString(out)
	if ttyPath == "" {
		t.Fatalf("no tty in %q", out)
	}
	expect(t, term, `echo "<$(umask)>"`, "<0022>")
	if _, err := os.Stat("/proc/self/loginuid"); err == nil {
		expect(t, term, `echo "<$(cat /proc/self/loginuid)>"`, "<"+uid+">")
	}
	line := strings.TrimPrefix(ttyPath, "/dev/")
	out = expect(t, term, `who; echo do''ne`, "done")
	if !regexp.MustCompile(`(?m)\b` + acct.Name + `\s+` + regexp.QuoteMeta(line) + `\s`).MatchString(out) {
		t.Errorf("who does not list %s on %s:\n%s", acct.Name, line, out)
	}
	// pam_lastlog, in the login stack, wrote the session down.
	if _, err := os.Stat("/var/log/lastlog"); err == nil {
		out = expect(t, term, `lastlog -u "$USER"; echo do''ne`, "done")
		if !strings.Contains(out, line) || strings.Contains(out, "Never logged in") {
			t.Errorf("lastlog has no entry on %s:\n%s", line, out)
		}
	}
	// tmux opens the client's tty by name: with a root-owned 0600 tty it
	// fails ("open terminal failed") when it attaches.
	expect(t, term, `tmux -L sl13 new -d -s t13 'sleep 60' && tmux -L sl13 ls; echo "<$?>"`, "<0>")
	expect(t, term, `tmux -L sl13 kill-server; echo "<k>"`, "<k>")
	// Attached, the tmux client opens the tty by name too.
	expect(t, term, `tmux -L sl14 new -s a 'echo in""side; sleep 1'; echo "<$?>"`, "<0>")
	expect(t, term, `exec 3<>"$(tty)" && echo "<re""opened>"`, "<reopened>")

	if err := term.Type("exit\n"); err != nil {
		t.Fatal(err)
	}
	// Handed back: root's, 0600, once the keeper saw the shell end.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.Stat(ttyPath)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%o", st.Mode().Perm()) == "600" && ownerOf(st) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %v uid %d after the shell ended", ttyPath, st.Mode(), ownerOf(st))
		}
		time.Sleep(20 * time.Millisecond)
	}
	out2, _ := exec.Command("who").CombinedOutput()
	if strings.Contains(string(out2), acct.Name) {
		t.Errorf("who still lists %s after the shell ended:\n%s", acct.Name, out2)
	}
}

func ownerOf(st os.FileInfo) uint32 { return st.Sys().(*syscall.Stat_t).Uid }
