package shell_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/helpers/shell"
	"sluice/internal/sessioncg"
	"sluice/msg"
)

// Where the runner made room for per-session cgroups, a session whose
// cgroup cannot be made, or that cannot be started in it, is refused with
// a clear message and nothing is left running or behind: started outside
// its cgroup, ending it would miss what left it with setsid. Before, the
// shell was started without a cgroup, with a warning in the log.
func TestEmbeddedCgroupFailClosed(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		root func(t *testing.T) string
		want string
	}{
		// sessioncg.New fails.
		{"no such directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "gone", "sluice-sessions") }, "cgroup could not be made"},
		// New works (mkdir), but a directory outside cgroupfs cannot take
		// a process (clone3 CLONE_INTO_CGROUP fails in sluice-login).
		{"not a cgroup", func(t *testing.T) string { return t.TempDir() }, "in the session's cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tc.root(t)
			t.Setenv(sessioncg.Env, root)
			mark := strconv.Itoa(3_000_000 + os.Getpid()%1_000_000 + len(tc.name))
			_, err := embedded().Open(context.Background(), msg.OpenShell{Machine: msg.HostMachine, User: "root", Args: []string{"/bin/sleep", mark}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "not started") {
				t.Fatalf("Open = %v, want a refusal saying %q", err, tc.want)
			}
			if tc.name == "no such directory" && !errors.Is(err, shell.ErrNoCgroup) {
				t.Fatalf("Open = %v, want ErrNoCgroup", err)
			}
			// Nothing running (sluice-login may take a moment to go).
			for deadline := time.Now().Add(5 * time.Second); sleeping(mark); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the shell runs although the session was refused")
				}
			}
			if ents, _ := os.ReadDir(root); len(ents) != 0 {
				t.Fatalf("left behind in the cgroup root: %v", ents)
			}
		})
	}
}

// sleeping reports whether some process runs "sleep mark".
func sleeping(mark string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "sleep\x00"+mark) {
			return true
		}
	}
	return false
}
