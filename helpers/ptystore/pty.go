package ptystore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
)

// ErrNotPTY: the fd offered is not a pty master.
var ErrNotPTY = pty.ErrNotMaster

// CheckMaster reports whether f is a Unix98 pty master (pty.CheckMaster).
func CheckMaster(f *os.File) error { return pty.CheckMaster(f) }

// hungUp reports whether every slave fd of the pty master fd is closed:
// the master then polls POLLHUP. A master that is not valid any more counts
// as hung up too.
func hungUp(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd)}}
	for {
		n, err := unix.Poll(pfd, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false
		}
		return n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}
}

// hangup signals the shell on a pty the way a terminal hangup would,
// because others (a frontend) may still hold the master, and closing our
// copy only hangs the pty up when it is the last one. SIGHUP goes to the
// foreground process group (TIOCGPGRP) and SIGHUP and SIGCONT to the
// session leader (TIOCGSID), as the kernel's hangup does. Unlike the
// kernel, we need permission to signal them: root (the embedded runner) or
// CAP_KILL. TIOCSIG, which needs none, only carries SIGINT, SIGQUIT and
// SIGTSTP. Without permission the shell hangs up when the last copy of the
// master is closed. The returned error is for the log only.
func hangup(fd int) error {
	var errs []error
	signal := func(pid int, sigs ...unix.Signal) {
		for _, sig := range sigs {
			if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("kill %d %v: %w", pid, sig, err))
			}
		}
	}
	// ENOTTY from either ioctl: no session has the slave as its
	// controlling terminal, so there is nobody to signal.
	if pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil && pgrp > 1 {
		signal(-pgrp, unix.SIGHUP)
	} else if err != nil && !errors.Is(err, unix.ENOTTY) {
		errs = append(errs, fmt.Errorf("TIOCGPGRP: %w", err))
	}
	if sid, err := unix.IoctlGetInt(fd, unix.TIOCGSID); err == nil && sid > 1 {
		signal(sid, unix.SIGHUP, unix.SIGCONT)
	} else if err != nil && !errors.Is(err, unix.ENOTTY) {
		errs = append(errs, fmt.Errorf("TIOCGSID: %w", err))
	}
	return errors.Join(errs...)
}

// dupFile returns a close-on-exec duplicate of f as a new *os.File.
func dupFile(f *os.File, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}
