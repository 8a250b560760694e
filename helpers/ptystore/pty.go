package ptystore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
	"sluice/internal/termsock"
	"sluice/rpc"
)

// ErrNotPTY: the fd offered is not a pty master.
var ErrNotPTY = pty.ErrNotMaster

// CheckMaster reports whether f is a Unix98 pty master (pty.CheckMaster).
func CheckMaster(f *os.File) error { return pty.CheckMaster(f) }

// sessionFD says what a session's fd is: a pty master, or the socket of
// a recorded session (package termsock), whose other end the recording
// helper holds. It is the kernel's answer about the open file (TIOCGPTN on
// the ptmx inode, SO_DOMAIN and SO_TYPE), so the frontend putting it
// cannot choose how ptystore ends the session. A socket must also have
// been made by a recorder (fromRecorder): ending a recorded session waits
// for its other end to close, and a socket whose other end the frontend
// holds, or a listening one nobody closes, would make every drop of it
// (sluicectl's, the limits', the policy recheck's) wait out its deadline
// and fail, the session held for good. Anything else is ErrNotPTY.
func sessionFD(f *os.File, recorders rpc.Allow) (sock bool, err error) {
	err = CheckMaster(f)
	if err == nil {
		return false, nil
	}
	if termsock.Is(f) {
		if rerr := fromRecorder(f, recorders); rerr != nil {
			return false, fmt.Errorf("%w: a stream socket %v", ErrNotPTY, rerr)
		}
		return true, nil
	}
	return false, err
}

// ErrNotRecorder: a socket that is not a recorder's session socket.
var ErrNotRecorder = errors.New("not made by a recording helper")

// fromRecorder checks, with what the kernel recorded when the socket pair
// was made (SO_PEERCRED, SO_PEERGROUPS: the creator's, for both ends of a
// socketpair), that recorders made it, and that it is connected and not
// listening. A frontend can make socket pairs, listen and connect, but
// not with a recorder's credentials.
func fromRecorder(f *os.File, recorders rpc.Allow) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	rc.Control(func(fd uintptr) { cerr = peerIn(int(fd), recorders) })
	return cerr
}

func peerIn(fd int, a rpc.Allow) error {
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 0 {
		return fmt.Errorf("%w: listening", ErrNotRecorder)
	}
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("%w: SO_PEERCRED: %v", ErrNotRecorder, err)
	}
	if uc.Pid == 0 {
		return fmt.Errorf("%w: not connected", ErrNotRecorder)
	}
	if slices.Contains(a.UIDs, uc.Uid) || slices.Contains(a.GIDs, uc.Gid) {
		return nil
	}
	if len(a.GIDs) > 0 {
		groups, err := peerGroups(fd)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNotRecorder, err)
		}
		for _, g := range groups {
			if slices.Contains(a.GIDs, g) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w (made by uid %d, pid %d)", ErrNotRecorder, uc.Uid, uc.Pid)
}

// peerGroups is SO_PEERGROUPS, which x/sys/unix has no getter for.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == unix.ERANGE && int(n/4) > len(buf) && n <= 1<<16 {
			buf = make([]uint32, n/4)
			continue
		}
		if e != 0 {
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", e)
		}
		return buf[:n/4], nil
	}
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
