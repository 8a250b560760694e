package relay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// The gateway → host direction of a stream (msg.RelayFramingV1). The
// relay holds no pty of its own (the gateway runs `ssh -T`), so the
// window size cannot come as sshd's SIGWINCH: the fleet helper sends the
// terminal's keys and its sizes as frames on ssh's stdin, and the relay
// reads them strictly. Output (host → gateway) is the session's bytes,
// raw: no framing, no copy but the relay's.
//
//	frame = type (1 byte) | length (2 bytes, big endian) | body (length bytes)
//	type 1 input: body = 1..MaxFrame bytes for the session's pty
//	type 2 size:  body = rows, cols, xpixel, ypixel (4 × 2 bytes, big endian),
//	              rows and cols 1..MaxDim
//
// Anything else (another type, an input frame of 0 or more than MaxFrame
// bytes, a size of another length or out of range, a frame cut short)
// ends the stream: the gateway's fleet helper never sends one, so it is
// a bug or someone else on the channel, and guessing where the next
// frame starts would type bytes nobody typed.

// Frame types.
const (
	FrameInput byte = 1
	FrameSize  byte = 2
)

// MaxFrame bounds an input frame's body: a pty read is at most 4 KiB,
// so the fleet helper never needs more; the relay's buffer is this.
const MaxFrame = 16 << 10

// MaxDim bounds rows and cols of a size frame, far past any screen.
const MaxDim = 4096

const headerLen = 3

// ErrBadFrame is the error of every malformed frame.
var ErrBadFrame = errors.New("relay: bad frame")

// AppendInput appends p to dst as input frames of at most MaxFrame bytes
// each; nothing for an empty p.
func AppendInput(dst, p []byte) []byte {
	for len(p) > 0 {
		n := min(len(p), MaxFrame)
		dst = append(dst, FrameInput)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
		dst = append(dst, p[:n]...)
		p = p[n:]
	}
	return dst
}

// AppendSize appends a size frame for ws to dst.
func AppendSize(dst []byte, ws unix.Winsize) []byte {
	dst = append(dst, FrameSize)
	dst = binary.BigEndian.AppendUint16(dst, 8)
	for _, v := range []uint16{ws.Row, ws.Col, ws.Xpixel, ws.Ypixel} {
		dst = binary.BigEndian.AppendUint16(dst, v)
	}
	return dst
}

// Frame is one frame read: Input's bytes (valid until the next Next) or
// a Size.
type Frame struct {
	Type  byte
	Input []byte
	Size  unix.Winsize
}

// Deframer reads frames from the channel.
type Deframer struct {
	r   *bufio.Reader
	buf [MaxFrame]byte
}

// NewDeframer reads frames from r.
func NewDeframer(r io.Reader) *Deframer {
	return &Deframer{r: bufio.NewReaderSize(r, 32<<10)}
}

// Next reads one frame. io.EOF means the gateway closed at a frame
// boundary; a frame cut short is an ErrBadFrame, as is every malformed
// one; other errors are the reader's.
func (d *Deframer) Next() (Frame, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(d.r, h[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, cut(err, "header")
	}
	t, n := h[0], int(binary.BigEndian.Uint16(h[1:]))
	switch t {
	case FrameInput:
		if n == 0 || n > MaxFrame {
			return Frame{}, fmt.Errorf("%w: input of %d bytes (1..%d)", ErrBadFrame, n, MaxFrame)
		}
		if _, err := io.ReadFull(d.r, d.buf[:n]); err != nil {
			return Frame{}, cut(err, "input")
		}
		return Frame{Type: t, Input: d.buf[:n]}, nil
	case FrameSize:
		if n != 8 {
			return Frame{}, fmt.Errorf("%w: size of %d bytes (8)", ErrBadFrame, n)
		}
		b := d.buf[:8]
		if _, err := io.ReadFull(d.r, b); err != nil {
			return Frame{}, cut(err, "size")
		}
		ws := unix.Winsize{Row: binary.BigEndian.Uint16(b), Col: binary.BigEndian.Uint16(b[2:]),
			Xpixel: binary.BigEndian.Uint16(b[4:]), Ypixel: binary.BigEndian.Uint16(b[6:])}
		if ws.Row == 0 || ws.Col == 0 || ws.Row > MaxDim || ws.Col > MaxDim {
			return Frame{}, fmt.Errorf("%w: size %dx%d (1..%d each)", ErrBadFrame, ws.Row, ws.Col, MaxDim)
		}
		return Frame{Type: t, Size: ws}, nil
	}
	return Frame{}, fmt.Errorf("%w: type %#x", ErrBadFrame, t)
}

func cut(err error, part string) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: cut short in its %s", ErrBadFrame, part)
	}
	return fmt.Errorf("relay: read frame: %w", err)
}
