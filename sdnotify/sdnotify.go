// Package sdnotify sends sd_notify(3) messages, with file descriptors, to
// the service manager: systemd, or sluice's embedded runner, which speak
// the same protocol. It has no dependency on the rest of sluice so any
// service can use it.
package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoSocket: $NOTIFY_SOCKET is not set, so no service manager listens.
// A service may treat that as "not supervised" (sd_notify returns 0 then).
var ErrNoSocket = errors.New("sdnotify: NOTIFY_SOCKET not set")

// MaxFDs is the kernel's SCM_MAX_FD: more rights than this cannot ride on
// one datagram.
const MaxFDs = 253

// Socket returns $NOTIFY_SOCKET ("" when unset).
func Socket() string { return os.Getenv("NOTIFY_SOCKET") }

// Notify sends state (newline-separated KEY=VALUE assignments, such as
// "READY=1" or "FDSTORE=1\nFDNAME=x") to $NOTIFY_SOCKET, with fds attached
// as SCM_RIGHTS. An address starting with '@' is in the abstract namespace.
// The manager learns our pid from the kernel (it sets SO_PASSCRED), never
// from the message.
func Notify(state string, fds ...*os.File) error {
	addr := Socket()
	if addr == "" {
		return ErrNoSocket
	}
	return NotifyTo(addr, state, fds...)
}

// NotifyTo is Notify to an explicit socket address.
func NotifyTo(addr, state string, fds ...*os.File) error {
	if len(fds) > MaxFDs {
		return fmt.Errorf("sdnotify: %d fds, at most %d fit one message", len(fds), MaxFDs)
	}
	if state == "" {
		return errors.New("sdnotify: empty state")
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		// systemd also knows vsock: addresses; sluice has no use for them.
		return fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q", addr)
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sdnotify: socket: %w", err)
	}
	defer unix.Close(s)
	var oob []byte
	if len(fds) > 0 {
		ints := make([]int, len(fds))
		for i, f := range fds {
			if f == nil {
				return fmt.Errorf("sdnotify: fd %d is nil", i)
			}
			ints[i] = int(f.Fd())
		}
		oob = unix.UnixRights(ints...)
	}
	// x/sys maps a leading '@' to the abstract namespace's leading NUL.
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, unix.MSG_NOSIGNAL); err != nil {
		return fmt.Errorf("sdnotify: send to %s: %w", addr, err)
	}
	return nil
}

// Ready tells the manager start-up is complete.
func Ready() error { return Notify("READY=1") }

// Stopping tells the manager the service is shutting down.
func Stopping() error { return Notify("STOPPING=1") }

// Store puts f in the manager's fd store under name. With poll false the
// manager does not drop it on POLLHUP/POLLERR (FDPOLL=0), which is what a
// pty master needs: it reports a hangup while no slave is open.
func Store(name string, poll bool, f *os.File) error {
	if err := ValidName(name); err != nil {
		return err
	}
	state := "FDSTORE=1\nFDNAME=" + name
	if !poll {
		state += "\nFDPOLL=0"
	}
	return Notify(state, f)
}

// Remove drops every fd stored under name.
func Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// ValidName checks an fd store name as systemd does (fdname_is_valid): 1
// to 255 printable ASCII bytes, no ':' (the LISTEN_FDNAMES separator).
func ValidName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("sdnotify: fd name of %d bytes, want 1..255", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c > 0x7e || c == ':' {
			return fmt.Errorf("sdnotify: fd name %q: byte 0x%02x not allowed", name, c)
		}
	}
	return nil
}
