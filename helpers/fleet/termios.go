package fleet

import (
	"os"

	"golang.org/x/sys/unix"
)

func unixGetTermios(f *os.File) (*unix.Termios, error) {
	return unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
}

func unixSetTermios(f *os.File, t *unix.Termios) error {
	return unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
}
