package e2e

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"sluice/runner"
)

// TestHelpersRunApart: under `sluice run` with the shipped config, on a
// machine without the sluice accounts, auth, policy, ptystore and the
// frontend each run as a uid of their own, and every socket belongs to
// the one unit meant to call it (the rest of this package shows those
// calls going through).
func TestHelpersRunApart(t *testing.T) {
	users(t) // auth has run, so its state directory exists
	owner := func(path string) int {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return int(st.Uid)
	}
	procUID := func(name string) int {
		t.Helper()
		pid, err := env.Run.WaitChild(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "Uid:" {
				var uid int
				fmt.Sscan(f[2], &uid) // effective
				return uid
			}
		}
		t.Fatalf("no Uid in /proc/%d/status", pid)
		return -1
	}
	uids := map[string]int{
		"frontend": procUID("sluice-frontend"),
		"ptystore": procUID("sluice-ptystore"),
		// Accept=yes units are seen through what the runner made theirs.
		"policy": owner(filepath.Join(env.RunDir, "shell.sock")),
		"auth":   owner(filepath.Join(env.Run.StateDir, "auth")),
	}
	seen := map[int]string{}
	for name, uid := range uids {
		if _, err := user.Lookup("sluice-" + name); err == nil {
			// The sysusers accounts exist here: those are used instead.
		} else if uid < runner.DynamicUIDMin || uid > runner.DynamicUIDMax {
			t.Errorf("%s runs as uid %d, not a dynamic one", name, uid)
		}
		if other, dup := seen[uid]; dup {
			t.Errorf("%s and %s share uid %d", name, other, uid)
		}
		seen[uid] = name
	}
	for _, sock := range []string{"auth", "policy", "ptystore"} {
		if got := owner(filepath.Join(env.RunDir, sock+".sock")); got != uids["frontend"] {
			t.Errorf("%s.sock owned by %d, want the frontend's %d", sock, got, uids["frontend"])
		}
	}
}
