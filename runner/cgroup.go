package runner

import (
	"os"
	"path/filepath"

	"sluice/internal/sessioncg"
)

// sessionCgroupsDir is where shell sessions get a cgroup each, as systemd
// gives each its own unit: sluice-sessions below the runner's own cgroup
// v2. Only root may make it, and only where cgroup v2 is mounted; "" when
// not, and then ending a session kills its process group and session but
// not what setsid'd away (docs/runner.md).
func sessionCgroupsDir(root bool) string {
	if !root {
		return ""
	}
	mount, err := sessioncg.Mount()
	if err != nil {
		return ""
	}
	own, err := sessioncg.Of(mount, "/proc", os.Getpid())
	if err != nil {
		return ""
	}
	return filepath.Join(own, "sluice-sessions")
}

// makeSessionCgroups creates the directory. It is shared by every runner
// in the same cgroup (sessions have random names), so it stays at stop.
func (r *Runner) makeSessionCgroups() {
	if r.sessionCG == "" {
		if r.root {
			r.log.Warn("runner: no cgroup v2 found: no per-session cgroups, so ending a session cannot reach what left it with setsid")
		}
		return
	}
	if err := os.Mkdir(r.sessionCG, 0o755); err != nil && !os.IsExist(err) {
		// Still passed on: the shell helper then refuses every session
		// rather than start one that ending could not reach whole.
		r.log.Error("runner: the per-session cgroups' directory cannot be made: every shell session will be refused", "dir", r.sessionCG, "err", err)
		return
	}
	sessioncg.Sweep(r.sessionCG)
	r.log.Info("runner: per-session cgroups", "dir", r.sessionCG)
}
