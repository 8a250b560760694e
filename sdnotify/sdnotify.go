// Package sdnotify sends sd_notify(3) messages, with file descriptors, to
// the service manager at $NOTIFY_SOCKET: systemd or sluice's embedded
// runner. go-systemd's daemon.SdNotify cannot pass fds, which the fd store
// needs.
package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoSocket: $NOTIFY_SOCKET is unset, so there is no manager to tell.
var ErrNoSocket = errors.New("sdnotify: NOTIFY_SOCKET not set")

// sendTimeout bounds one send: a manager that stopped reading must not hang
// the caller for ever.
const sendTimeout = 5 * time.Second

// Socket returns $NOTIFY_SOCKET ("" when unset).
func Socket() string { return os.Getenv("NOTIFY_SOCKET") }

// Available reports whether a manager is listening for notifications.
func Available() bool { return Socket() != "" }

// Notify sends state ("READY=1", "FDSTORE=1\nFDNAME=x", ...) with fds as
// SCM_RIGHTS to $NOTIFY_SOCKET, a path or an abstract address written with
// a leading '@'. Without $NOTIFY_SOCKET it does nothing and returns nil,
// as sd_notify does; callers that need a manager check Available.
func Notify(state string, fds ...*os.File) error {
	addr := Socket()
	if addr == "" {
		return nil
	}
	return Send(addr, state, fds...)
}

// Send is Notify to an explicit address.
func Send(addr, state string, fds ...*os.File) error {
	if addr == "" || (addr[0] != '/' && addr[0] != '@') {
		return fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q (want a path or @abstract)", addr)
	}
	if len(fds) > 253 {
		return fmt.Errorf("sdnotify: %d fds, at most 253 fit one message", len(fds))
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sdnotify: socket: %w", err)
	}
	defer unix.Close(s)
	tv := unix.NsecToTimeval(sendTimeout.Nanoseconds())
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)

	var oob []byte
	if len(fds) > 0 {
		ints := make([]int, len(fds))
		for i, f := range fds {
			// Control rather than Fd: Fd would switch a file Go opened
			// non-blocking to blocking, and the open file description is
			// shared with every other holder of the fd.
			rc, err := f.SyscallConn()
			if err != nil {
				return fmt.Errorf("sdnotify: fd %d: %w", i, err)
			}
			rc.Control(func(fd uintptr) { ints[i] = int(fd) })
		}
		oob = unix.UnixRights(ints...)
	}
	// SockaddrUnix turns a leading '@' into the abstract namespace's NUL.
	to := &unix.SockaddrUnix{Name: addr}
	for {
		err = unix.Sendmsg(s, []byte(state), oob, to, unix.MSG_NOSIGNAL)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("sdnotify: send %q to %s: %w", firstLine(state), addr, err)
	}
	return nil
}

// Ready tells the manager start-up is finished.
func Ready() error { return Notify("READY=1") }

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
