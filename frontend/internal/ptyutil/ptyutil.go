// Package ptyutil starts a command on a fresh pty. The frontend itself never
// opens ptys (the shell helper does); its tests and benchmarks use this to
// drive the session hub with a real shell without the rest of the suite.
package ptyutil

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"sluice/internal/pty"
)

// Open returns a new pty master and its slave.
func Open() (master, slave *os.File, err error) { return pty.Open() }

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

// Command opens a pty of the given size and starts name with args on it,
// returning the master.
func Command(cols, rows uint16, name string, args ...string) (*os.File, *exec.Cmd, error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	if err := pty.SetSize(m, rows, cols); err != nil {
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
