package hangup

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLeaderScope: the logind scope is chosen only when logind records
// the pty's session leader as the session's leader, and only for a
// session scope below user.slice.
func TestLeaderScope(t *testing.T) {
	for _, tc := range []struct {
		name, cgroup, record string
		want                 string
	}{
		{"the shell leads its login", "0::/user.slice/user-0.slice/session-7.scope\n", "UID=0\nLEADER=105\n", "/user.slice/user-0.slice/session-7.scope"},
		{"another process leads it (a shell inside an ssh login)", "0::/user.slice/user-0.slice/session-7.scope\n", "LEADER=99\n", ""},
		{"no record", "0::/user.slice/user-0.slice/session-7.scope\n", "", ""},
		{"not a session scope", "0::/system.slice/sluice-ptystore.service\n", "LEADER=105\n", ""},
		{"a scope deeper down", "0::/user.slice/user-0.slice/session-7.scope/sub\n", "LEADER=105\n", ""},
		{"the user manager", "0::/user.slice/user-0.slice/user@0.service/app.slice\n", "LEADER=105\n", ""},
		{"cgroup v1 only", "1:name=systemd:/user.slice/user-0.slice/session-7.scope\n", "LEADER=105\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			proc, sessions := filepath.Join(dir, "proc"), filepath.Join(dir, "sessions")
			for _, d := range []string{filepath.Join(proc, "105"), sessions} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(proc, "105", "cgroup"), []byte(tc.cgroup), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.record != "" {
				if err := os.WriteFile(filepath.Join(sessions, "7"), []byte(tc.record), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{Proc: proc, Sessions: sessions, CgroupMount: "/sys/fs/cgroup"}
			got := leaderScope(cfg, 105)
			want := tc.want
			if want != "" {
				want = "/sys/fs/cgroup" + want
			}
			if got != want {
				t.Errorf("leaderScope = %q, want %q", got, want)
			}
		})
	}
}
