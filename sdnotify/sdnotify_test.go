package sdnotify

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// listen makes a receiving notify socket like a service manager's:
// datagram, SO_PASSCRED, at a path or an abstract address.
func listen(t *testing.T, addr string) int {
	t.Helper()
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: addr}); err != nil {
		t.Fatal(err)
	}
	return s
}

type got struct {
	state string
	pid   int32
	fds   []int
}

func recv(t *testing.T, s int) got {
	t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*MaxFDs))
	n, oobn, _, _, err := unix.Recvmsg(s, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	g := got{state: string(buf[:n])}
	for i := range msgs {
		switch msgs[i].Header.Type {
		case unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(&msgs[i])
			if err != nil {
				t.Fatal(err)
			}
			g.fds = append(g.fds, fds...)
		case unix.SCM_CREDENTIALS:
			uc, err := unix.ParseUnixCredentials(&msgs[i])
			if err != nil {
				t.Fatal(err)
			}
			g.pid = uc.Pid
		}
	}
	return g
}

func TestNotify(t *testing.T) {
	dir := t.TempDir()
	abstract := fmt.Sprintf("@sluice-sdnotify-test-%d", os.Getpid())
	for _, tc := range []struct {
		name  string
		addr  string
		send  func() error
		state string
		nfds  int
	}{
		{"ready at a path", filepath.Join(dir, "notify"), Ready, "READY=1", 0},
		{"stopping in the abstract namespace", abstract, Stopping, "STOPPING=1", 0},
		{"store with poll", filepath.Join(dir, "n2"), nil, "FDSTORE=1\nFDNAME=pipe", 1},
		{"store without poll", abstract + "-2", nil, "FDSTORE=1\nFDNAME=pipe\nFDPOLL=0", 1},
		{"remove", filepath.Join(dir, "n3"), func() error { return Remove("pipe") }, "FDSTOREREMOVE=1\nFDNAME=pipe", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listen(t, tc.addr)
			t.Setenv("NOTIFY_SOCKET", tc.addr)
			var w *os.File
			send := tc.send
			if send == nil {
				r, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				w = pw
				send = func() error { return Store("pipe", !strings.Contains(tc.state, "FDPOLL=0"), r) }
			}
			if err := send(); err != nil {
				t.Fatal(err)
			}
			g := recv(t, s)
			if g.state != tc.state {
				t.Errorf("state %q, want %q", g.state, tc.state)
			}
			if g.pid != int32(os.Getpid()) {
				t.Errorf("kernel says sender pid %d, want %d", g.pid, os.Getpid())
			}
			if len(g.fds) != tc.nfds {
				t.Fatalf("%d fds, want %d", len(g.fds), tc.nfds)
			}
			if w != nil {
				// The fd that arrived is the pipe's read end: data written
				// to our end comes out of it.
				w.Write([]byte("through the store"))
				w.Close()
				f := os.NewFile(uintptr(g.fds[0]), "stored")
				b, err := io.ReadAll(f)
				f.Close()
				if err != nil || string(b) != "through the store" {
					t.Errorf("read %q, %v", b, err)
				}
			}
		})
	}
}

func TestNotifyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, env, state string
		want             string
	}{
		{"unset", "", "READY=1", "NOTIFY_SOCKET not set"},
		{"vsock", "vsock:2:1", "READY=1", "unsupported"},
		{"nobody listens", filepath.Join(t.TempDir(), "none"), "READY=1", "no such file"},
		{"empty state", "/x", "", "empty state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tc.env)
			err := Notify(tc.state)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if tc.env == "" && !errors.Is(err, ErrNoSocket) {
				t.Errorf("err %v is not ErrNoSocket", err)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"pty.abc-_=", true},
		{strings.Repeat("x", 255), true},
		{strings.Repeat("x", 256), false},
		{"", false},
		{"a:b", false},
		{"a\nb", false},
		{"caf\xc3\xa9", false},
	} {
		if err := ValidName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
