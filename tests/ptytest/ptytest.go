// Package ptytest drives a terminal from a test: type a line into a pty
// master and wait for a text to come out of it.
package ptytest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Wait is how long Expect waits for its text. It is a safety net so a
// broken shell fails the test instead of hanging it, not a measure of
// speed: nothing asserts on how long it took.
var Wait = 20 * time.Second

// Term is a pty master in non-blocking mode, so reads can give up.
type Term struct {
	f   *os.File
	out []byte // read and not yet matched
}

// New takes over master (which it closes on Close) and reads it through
// a non-blocking duplicate.
func New(master *os.File) (*Term, error) {
	rc, err := master.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(m uintptr) { fd, derr = unix.FcntlInt(m, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("ptytest: dup: %w", derr)
	}
	master.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ptytest: nonblock: %w", err)
	}
	return &Term{f: os.NewFile(uintptr(fd), "pty-master")}, nil
}

// Type writes s to the terminal, as typed keys.
func (t *Term) Type(s string) error {
	_, err := t.f.Write([]byte(s))
	return err
}

// Expect reads until want has appeared in the output since the last
// successful Expect, and returns that output up to and including want.
func (t *Term) Expect(want string) (string, error) {
	deadline := time.Now().Add(Wait)
	buf := make([]byte, 4096)
	for {
		if i := bytes.Index(t.out, []byte(want)); i >= 0 {
			got := string(t.out[:i+len(want)])
			t.out = append([]byte(nil), t.out[i+len(want):]...)
			return got, nil
		}
		t.f.SetReadDeadline(deadline)
		n, err := t.f.Read(buf)
		t.out = append(t.out, buf[:n]...)
		if err == nil || n > 0 {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "", fmt.Errorf("ptytest: no %q within %v; output was %q", want, Wait, t.out)
		}
		// EIO once every slave fd is closed: the program is gone.
		return "", fmt.Errorf("ptytest: reading for %q: %w; output was %q", want, err, t.out)
	}
}

// Close closes the master, which hangs up the shell.
func (t *Term) Close() error { return t.f.Close() }
