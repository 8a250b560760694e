package pty_test

import (
	"bytes"
	"io"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
)

func TestOpenRoundTrip(t *testing.T) {
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()

	name, err := pty.Name(m)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != name {
		t.Errorf("slave is %q, ptsname says %q", s.Name(), name)
	}
	for _, f := range []interface{ Fd() uintptr }{m, s} {
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("fd %d without FD_CLOEXEC", f.Fd())
		}
		st, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st&unix.O_ACCMODE != unix.O_RDWR {
			t.Errorf("fd %d access mode %#o, want O_RDWR", f.Fd(), st&unix.O_ACCMODE)
		}
	}
	if err := pty.SetSize(m, 40, 120); err != nil {
		t.Fatal(err)
	}
	ws, err := unix.IoctlGetWinsize(int(s.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Row != 40 || ws.Col != 120 {
		t.Errorf("slave size %dx%d, want 40x120", ws.Row, ws.Col)
	}

	// Raw mode on the slave so the bytes come through unchanged.
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	want := []byte("through the pty\n")
	if _, err := s.Write(want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(m, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("read %q from the master, want %q", got, want)
	}
}
