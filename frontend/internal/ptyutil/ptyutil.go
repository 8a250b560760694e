// Package ptyutil opens a pseudo-terminal pair and starts a command on its
// slave end. The frontend itself never opens ptys (the shell helper does);
// its tests and benchmarks use this to drive the session hub with a real
// shell without the rest of the suite.
package ptyutil

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Open returns a new pty master and its slave.
func Open() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ptyutil: open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("ptyutil: unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("ptyutil: pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("ptyutil: open %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "ptmx"), os.NewFile(uintptr(sfd), name), nil
}

// Start runs cmd as a session leader with the slave as its controlling
// terminal and stdio, then closes the parent's copy of the slave so the
// master sees EIO once the command and its children are gone.
func Start(cmd *exec.Cmd, slave *os.File) error {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	err := cmd.Start()
	slave.Close()
	if err != nil {
		return fmt.Errorf("ptyutil: start %s: %w", cmd.Path, err)
	}
	return nil
}

// SetSize sets the window size on a pty (either end).
func SetSize(f *os.File, cols, rows uint16) error {
	// Through SyscallConn: f.Fd() would switch the fd to blocking mode.
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("ptyutil: set size: %w", err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows})
	}); err != nil {
		return fmt.Errorf("ptyutil: set size: %w", err)
	}
	if ierr != nil {
		return fmt.Errorf("ptyutil: set size: %w", ierr)
	}
	return nil
}

// Command opens a pty of the given size and starts name with args on it,
// returning the master.
func Command(cols, rows uint16, name string, args ...string) (*os.File, *exec.Cmd, error) {
	m, s, err := Open()
	if err != nil {
		return nil, nil, err
	}
	if err := SetSize(m, cols, rows); err != nil {
		m.Close()
		s.Close()
		return nil, nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	if err := Start(cmd, s); err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, cmd, nil
}
