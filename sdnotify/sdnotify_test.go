package sdnotify

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// listen binds a datagram socket at addr (a path or @abstract) the way a
// service manager does, with SO_PASSCRED so the sender is known.
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

// recv reads one message: its text, the sender pid and the fds it carried.
func recv(t *testing.T, s int) (string, int32, []*os.File) {
	t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*253))
	n, oobn, _, _, err := unix.Recvmsg(s, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	scms, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	var pid int32
	var files []*os.File
	for _, m := range scms {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "received"))
			}
		} else if c, err := unix.ParseUnixCredentials(&m); err == nil {
			pid = c.Pid
		}
	}
	return string(buf[:n]), pid, files
}

func TestNotify(t *testing.T) {
	cases := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "notify") }},
		{"abstract", func(t *testing.T) string { return fmt.Sprintf("@sluice-sdnotify-test-%d", os.Getpid()) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr(t)
			s := listen(t, addr)
			t.Setenv("NOTIFY_SOCKET", addr)
			if !Available() {
				t.Fatal("Available() false with NOTIFY_SOCKET set")
			}
			if err := Ready(); err != nil {
				t.Fatal(err)
			}
			text, pid, fds := recv(t, s)
			if text != "READY=1" || pid != int32(os.Getpid()) || len(fds) != 0 {
				t.Fatalf("got %q from pid %d with %d fds", text, pid, len(fds))
			}

			// Two fds ride along and are the very same open files.
			r1, w1, _ := os.Pipe()
			r2, w2, _ := os.Pipe()
			defer r1.Close()
			defer r2.Close()
			if err := Notify("FDSTORE=1\nFDNAME=two", w1, w2); err != nil {
				t.Fatal(err)
			}
			text, _, fds = recv(t, s)
			if text != "FDSTORE=1\nFDNAME=two" || len(fds) != 2 {
				t.Fatalf("got %q with %d fds", text, len(fds))
			}
			w1.Close()
			w2.Close()
			for i, pair := range [][2]*os.File{{fds[0], r1}, {fds[1], r2}} {
				fmt.Fprintf(pair[0], "fd%d", i)
				pair[0].Close()
				got, _ := io.ReadAll(pair[1])
				if string(got) != fmt.Sprintf("fd%d", i) {
					t.Fatalf("fd %d carried %q", i, got)
				}
			}
		})
	}
}

func TestNotifyErrors(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Fatalf("unset NOTIFY_SOCKET: %v, want nil like sd_notify", err)
	}
	if Available() {
		t.Fatal("Available() with NOTIFY_SOCKET empty")
	}
	for _, addr := range []string{"vsock:2:1234", "relative/path", filepath.Join(t.TempDir(), "nobody-listens")} {
		t.Setenv("NOTIFY_SOCKET", addr)
		if err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "sdnotify") {
			t.Errorf("NOTIFY_SOCKET=%q: err %v, want an sdnotify error", addr, err)
		}
	}
}
