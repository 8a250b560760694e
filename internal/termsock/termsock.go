// Package termsock is what a recorded session's terminal travels on
// instead of a second pty: an AF_UNIX stream socket pair whose one end the
// recording helper keeps and whose other end is the session's fd, held by
// ptystore and the frontend (docs/recording.md). A pty hop costs two
// context switches per 4 KiB through the kernel's flip-buffer worker; a
// socket moves a whole burst in one copy.
//
// From the recorder the socket carries the shell's output as plain bytes,
// so a reader reads it as it reads a pty master. Towards the recorder it
// carries frames, because what a pty does with an ioctl (the window size)
// must be told apart from typed bytes: one type byte, a big-endian uint16
// payload length, the payload. Input frames carry typed bytes; a resize
// frame carries cols and rows as two big-endian uint16.
package termsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Frame types.
const (
	Input  byte = 'i'
	Resize byte = 'r'
)

const (
	// HeaderLen is the frame header: type and payload length.
	HeaderLen = 3
	// MaxPayload bounds one frame's payload. Small frames are written
	// whole or not at all by a non-blocking write (one socket buffer),
	// so a writer never leaves half a frame behind by accident.
	MaxPayload = 4 << 10
)

// Pair returns a connected stream socket pair, close-on-exec: mine (kept
// by the recorder, in Go's poller) and theirs (handed out).
func Pair() (mine, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("termsock: socketpair: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("termsock: nonblock: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "termsock"), os.NewFile(uintptr(fds[1]), "termsock"), nil
}

// IsFD reports whether fd is an AF_UNIX stream socket: the kernel's
// answer about the open file, which no caller can choose.
func IsFD(fd int) bool {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil || dom != unix.AF_UNIX {
		return false
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && typ == unix.SOCK_STREAM
}

// Is is IsFD for a file.
func Is(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) { ok = IsFD(int(fd)) })
	return ok
}

// AppendInput appends p as input frames of at most MaxPayload bytes.
func AppendInput(dst, p []byte) []byte {
	for len(p) > 0 {
		n := min(len(p), MaxPayload)
		dst = append(dst, Input, byte(n>>8), byte(n))
		dst = append(dst, p[:n]...)
		p = p[n:]
	}
	return dst
}

// AppendResize appends a resize frame.
func AppendResize(dst []byte, cols, rows uint16) []byte {
	return append(dst, Resize, 0, 4, byte(cols>>8), byte(cols), byte(rows>>8), byte(rows))
}

// ErrFrame: the bytes are not a frame this package writes.
var ErrFrame = errors.New("termsock: invalid frame")

// Next parses the first frame of b. It returns the frame's type and
// payload and the bytes it took, or n == 0 when b holds only part of a
// frame. A frame of an unknown type, an oversized one or a resize that
// is not 4 bytes is ErrFrame: the writer is not speaking this protocol,
// and nothing after it can be trusted to be framed.
func Next(b []byte) (typ byte, payload []byte, n int, err error) {
	if len(b) < HeaderLen {
		return 0, nil, 0, nil
	}
	typ, size := b[0], int(binary.BigEndian.Uint16(b[1:3]))
	switch {
	case typ != Input && typ != Resize:
		return 0, nil, 0, fmt.Errorf("%w: type %#x", ErrFrame, typ)
	case size > MaxPayload:
		return 0, nil, 0, fmt.Errorf("%w: %d-byte payload", ErrFrame, size)
	case typ == Resize && size != 4:
		return 0, nil, 0, fmt.Errorf("%w: %d-byte resize", ErrFrame, size)
	}
	if len(b) < HeaderLen+size {
		return 0, nil, 0, nil
	}
	return typ, b[HeaderLen : HeaderLen+size], HeaderLen + size, nil
}

// ParseResize returns a resize frame's payload as cols and rows.
func ParseResize(p []byte) (cols, rows uint16) {
	return binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4])
}

// Writer frames every Write as input to W, whole: a caller that writes
// from several goroutines must serialize them (an os.File does).
type Writer struct{ W io.Writer }

func (w Writer) Write(p []byte) (int, error) {
	if _, err := w.W.Write(AppendInput(nil, p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
