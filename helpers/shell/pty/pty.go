// Package pty allocates pseudo-terminals without cgo: posix_openpt,
// unlockpt and ptsname done as the open(2) and ioctl(2) calls they are in
// the C library.
package pty

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Open allocates a pty. The master is O_RDWR|O_NOCTTY|O_CLOEXEC, fit to be
// handed to another process over SCM_RIGHTS; the slave is the same, so it
// never becomes the caller's controlling terminal by accident and only
// reaches a child through an explicit fd mapping. The caller closes both.
func Open() (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("pty: open /dev/ptmx: %w", err)
	}
	// unlockpt
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("pty: unlock: %w", err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("pty: ptsname: %w", err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	sfd, err := openPeer(mfd, name)
	if err != nil {
		unix.Close(mfd)
		return nil, nil, err
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(uintptr(sfd), name), nil
}

// openPeer opens the slave through the master (TIOCGPTPEER, Linux 4.13),
// which cannot be raced by whatever else sits at /dev/pts/N in this mount
// namespace; older kernels fall back to the path.
func openPeer(mfd int, name string) (int, error) {
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER,
		uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno == 0 {
		return int(sfd), nil
	}
	if !errors.Is(errno, unix.EINVAL) && !errors.Is(errno, unix.ENOTTY) {
		return -1, fmt.Errorf("pty: open peer %s: %w", name, errno)
	}
	s, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("pty: open %s: %w", name, err)
	}
	return s, nil
}

// Name returns the slave path of a pty master (ptsname).
func Name(master *os.File) (string, error) {
	rc, err := master.SyscallConn()
	if err != nil {
		return "", fmt.Errorf("pty: %w", err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN) }); err != nil {
		return "", fmt.Errorf("pty: %w", err)
	}
	if ierr != nil {
		return "", fmt.Errorf("pty: ptsname: %w", ierr)
	}
	return "/dev/pts/" + strconv.Itoa(n), nil
}

// SetSize sets the window size, which a shell reads at start.
func SetSize(f *os.File, rows, cols uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("pty: %w", err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return fmt.Errorf("pty: %w", err)
	}
	if ierr != nil {
		return fmt.Errorf("pty: set size: %w", ierr)
	}
	return nil
}
