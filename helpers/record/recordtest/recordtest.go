// Package recordtest checks recordings the way an auditor's tools read
// them: `asciinema cat` (Debian package asciinema) must parse every
// recording a test makes.
package recordtest

import (
	"bytes"
	"os/exec"
	"syscall"
	"testing"

	"sluice/internal/pty"
)

// Cat runs `asciinema cat path` and returns what it printed: the
// recording's output. asciinema opens /dev/tty even for cat, so it gets a
// controlling terminal of its own (a fresh pty) while its stdout is a
// pipe, which keeps the bytes as they are. Without asciinema installed
// the test is failed, not skipped: scripts/deps.sh installs it.
func Cat(t testing.TB, path string) []byte {
	t.Helper()
	if _, err := exec.LookPath("asciinema"); err != nil {
		t.Fatalf("asciinema not installed (scripts/deps.sh installs it): %v", err)
	}
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()
	cmd := exec.Command("asciinema", "cat", path)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Run(); err != nil {
		t.Fatalf("asciinema cat %s: %v\n%s", path, err, errb.Bytes())
	}
	return out.Bytes()
}
