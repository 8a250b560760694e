package sessioncg

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSweepSparesNewCgroups: a session cgroup is empty between New and the
// shell's clone into it; a Sweep then (another shell helper's, another
// runner's) must leave it, or the shell starts outside it and ending the
// session misses what setsid'd away. Empty ones old enough go. Run on the
// real cgroup v2 where this machine has one, else on a plain directory
// (rmdir of an empty directory behaves alike).
func TestSweepSparesNewCgroups(t *testing.T) {
	root := t.TempDir()
	if os.Geteuid() == 0 {
		if mount, err := Mount(); err == nil {
			own, err := Of(mount, "/proc", os.Getpid())
			if err == nil {
				dir := filepath.Join(own, "sluice-sweep-test")
				if os.Mkdir(dir, 0o755) == nil {
					t.Cleanup(func() { os.Remove(dir) })
					root = dir
				}
			}
		}
	}
	f, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fresh := f.Name()
	Sweep(root)
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("Sweep removed a session cgroup made just now: %v", err)
	}
	// An hour from now it is an abandoned one.
	sweep(root, SweepAge, time.Now().Add(time.Hour))
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Fatalf("an empty session cgroup an hour old is still there: %v", err)
	}
}
