package record

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/msg"
)

// A compromised frontend shuts down the reading side of its copy of the
// session socket (which every copy shares), hoping the shell's output
// goes on past a recorder that can no longer pass it on, or that the
// session stays open unrecorded. The shell's next output is recorded
// first, its pass-on fails, and the session ends, sealed.
func TestSpliceFrontendStopsReading(t *testing.T) {
	r := newRig(t, true, false, 0)
	// No echo, or the echo of what is typed would be the output that
	// ends the session.
	tio, err := unix.IoctlGetTermios(int(r.shell.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(int(r.shell.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(int(r.front.Fd()), unix.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	r.typeText(t, "typed-after-shut\n")
	// Typing still works (its direction is open): the shell gets it,
	// recorded first.
	line := make([]byte, 64)
	r.shell.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.shell.Read(line); err != nil || !strings.Contains(string(line[:n]), "typed-after-shut") {
		t.Fatalf("the shell read %q, %v", line[:n], err)
	}
	if _, err := r.shell.Write([]byte("output-after-shut\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session went on after the frontend stopped reading")
	}
	ev := events(t, r.path)
	if !strings.Contains(ev["o"], "output-after-shut") {
		t.Errorf("output not recorded: %q", ev["o"])
	}
	if !strings.Contains(ev["i"], "typed-after-shut") {
		t.Errorf("input not recorded: %q", ev["i"])
	}
	b, _ := os.ReadFile(r.path)
	if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != msg.RecIntact {
		t.Fatalf("verify: %+v", v)
	}
}
