package hub

import (
	"fmt"

	"golang.org/x/sys/unix"

	"sluice/internal/termsock"
)

// terminal is how a session's fd takes typed bytes and window sizes. A pty
// master takes the bytes as they are and the size by TIOCSWINSZ. A
// recorded session's fd is a socket to the recording helper (package
// termsock, docs/recording.md), which takes both as frames, reads them
// and applies them to the shell's pty; its output reads as a pty's does.
type terminal interface {
	// frame returns what to write to the fd for typed bytes p.
	frame(p []byte) []byte
	// resize sets the size on fd, or returns the bytes to write for it.
	resize(fd int, cols, rows uint16) ([]byte, error)
}

// terminalOf asks the kernel what fd is.
func terminalOf(fd int) terminal {
	if termsock.IsFD(fd) {
		return sockTerminal{}
	}
	return ptyTerminal{}
}

type ptyTerminal struct{}

func (ptyTerminal) frame(p []byte) []byte { return p }

func (ptyTerminal) resize(fd int, cols, rows uint16) ([]byte, error) {
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows}); err != nil {
		return nil, fmt.Errorf("TIOCSWINSZ: %w", err)
	}
	return nil, nil
}

// sockTerminal frames. Input goes through the session's one input queue,
// whose writes keep their order, so a frame split by a short write is
// completed before the next one starts.
type sockTerminal struct{}

func (sockTerminal) frame(p []byte) []byte { return termsock.AppendInput(nil, p) }

func (sockTerminal) resize(fd int, cols, rows uint16) ([]byte, error) {
	return termsock.AppendResize(nil, cols, rows), nil
}
