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

// ErrNotMaster: the fd offered is not a pty master.
var ErrNotMaster = errors.New("not a pty master")

// ptmx is the clone device every Unix98 pty master is opened through, both
// /dev/ptmx and the per-instance /dev/pts/ptmx: char major 5, minor 2.
const ptmxMajor, ptmxMinor = 5, 2

// slaveMajor is the char major of every Unix98 pty slave; its minor is
// the pty's number (TIOCGPTN), up to 2^20 of them.
const slaveMajor = 136

// CheckMaster reports whether f is a Unix98 pty master. Both tests must
// pass: the inode is the ptmx clone device, and TIOCGPTN answers, which only
// the master side of a Unix98 pty does (a slave gives ENOTTY). Either one
// alone could be met by something else: ioctl numbers are not unique across
// drivers, and a plain open of /dev/ptmx is a fresh, unrelated pty.
func CheckMaster(f *os.File) error {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%w: fstat: %v", ErrNotMaster, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("%w: file type %#o", ErrNotMaster, st.Mode&unix.S_IFMT)
	}
	if maj, mnr := unix.Major(st.Rdev), unix.Minor(st.Rdev); maj != ptmxMajor || mnr != ptmxMinor {
		return fmt.Errorf("%w: char device %d:%d", ErrNotMaster, maj, mnr)
	}
	if _, err := unix.IoctlGetInt(fd, unix.TIOCGPTN); err != nil {
		return fmt.Errorf("%w: TIOCGPTN: %v", ErrNotMaster, err)
	}
	return nil
}

// SlaveDev is the device number of a master's slave, as /proc/PID/stat's
// tty_nr shows the controlling terminal: the same in every devpts
// instance, so it also names a container's ptys from the host.
func SlaveDev(master *os.File) (uint64, error) {
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		return 0, fmt.Errorf("pty: TIOCGPTN: %w", err)
	}
	return unix.Mkdev(slaveMajor, uint32(n)), nil
}

// GetSize reads the window size.
func GetSize(f *os.File) (rows, cols uint16, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("pty: %w", err)
	}
	var ws *unix.Winsize
	var ierr error
	if err := rc.Control(func(fd uintptr) { ws, ierr = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) }); err != nil {
		return 0, 0, fmt.Errorf("pty: %w", err)
	}
	if ierr != nil {
		return 0, 0, fmt.Errorf("pty: get size: %w", ierr)
	}
	return ws.Row, ws.Col, nil
}
