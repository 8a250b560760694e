package ptystore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
	"sluice/internal/termsock"
)

// ErrNotPTY: the fd offered is not a pty master.
var ErrNotPTY = pty.ErrNotMaster

// CheckMaster reports whether f is a Unix98 pty master (pty.CheckMaster).
func CheckMaster(f *os.File) error { return pty.CheckMaster(f) }

// sessionFD says what a session's fd is: a pty master, or the socket of
// a recorded session (package termsock), whose other end the recording
// helper holds. It is the kernel's answer about the open file (TIOCGPTN on
// the ptmx inode, SO_DOMAIN and SO_TYPE), so the frontend putting it
// cannot choose how ptystore ends the session. Anything else is
// ErrNotPTY.
func sessionFD(f *os.File) (sock bool, err error) {
	err = CheckMaster(f)
	if err == nil {
		return false, nil
	}
	if termsock.Is(f) {
		return true, nil
	}
	return false, err
}

// EndSocketMax bounds the wait for a recorder to end its session when the
// caller set no deadline: the hangup helper's grace and SIGKILL rounds
// fit in it.
const EndSocketMax = 20 * time.Second

// endSocket ends a recorded session, whose fd is the socket to its
// recorder: shutdown(SHUT_WR) acts on the socket every copy shares (the
// frontend's too: it can type no more), and the recorder, seeing it, seals
// the recording, has the hangup helper end the shell's session and only
// then closes its end. That close is what this waits for (POLLHUP), so
// ending a recorded session returns once its shell is gone, as for a pty.
func endSocket(ctx context.Context, f *os.File) error {
	fd := int(f.Fd())
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil && !errors.Is(err, unix.ENOTCONN) {
		return fmt.Errorf("shutdown: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(EndSocketMax)
	}
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return errors.New("the recorder did not end the session in time")
		}
		_, err := unix.Poll(p, int(min(wait, 100*time.Millisecond)/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll: %w", err)
		}
		if p[0].Revents&(unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for the recorder: %w", ctx.Err())
		}
	}
}

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
