package termsock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// MaxSide bounds a resize frame's cols and rows for a Reader, far past
// any screen: a window of 0 or 65535 columns is a writer's bug or an
// attack on the programs that allocate by it.
const MaxSide = 4096

// Reader reads frames from a stream strictly, for a channel whose writer
// is another process (the fleet relay's `ssh -T`, docs/fleet.md): the
// rules of Next, and also no empty input (AppendInput never writes one)
// and cols and rows 1..MaxSide. Every frame it returns is one Next takes,
// so its bytes (Frame) can go on to a recorder's socket as they came.
//
// The first bad frame is the end: nothing after it can be trusted to be
// framed, and guessing where the next frame starts would type bytes
// nobody typed.
type Reader struct {
	r   *bufio.Reader
	buf [HeaderLen + MaxPayload]byte
	n   int // bytes of buf the last frame took
}

// NewReader reads frames from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 32<<10)}
}

// Next reads one frame and returns its type and payload, valid until the
// next call. io.EOF means the stream ended at a frame boundary; a frame
// cut short is an ErrFrame, as is every malformed one; other errors are
// the underlying reader's.
func (d *Reader) Next() (typ byte, payload []byte, err error) {
	d.n = 0
	h := d.buf[:HeaderLen]
	if _, err := io.ReadFull(d.r, h); err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, cut(err, "header")
	}
	// The header alone is a whole frame only for an empty payload; a
	// partial one (n == 0) says the header is sound and the payload due.
	typ, _, n, err := Next(h)
	if err != nil {
		return 0, nil, err
	}
	size := int(h[1])<<8 | int(h[2])
	if n == 0 {
		if _, err := io.ReadFull(d.r, d.buf[HeaderLen:HeaderLen+size]); err != nil {
			return 0, nil, cut(err, "payload")
		}
	}
	// Next took this header above, so it takes the whole frame now.
	typ, payload, n, err = Next(d.buf[:HeaderLen+size])
	if err != nil || n != HeaderLen+size {
		return 0, nil, fmt.Errorf("%w: %d-byte frame taken as %d (%v)", ErrFrame, HeaderLen+size, n, err)
	}
	switch typ {
	case Input:
		if size == 0 {
			return 0, nil, fmt.Errorf("%w: empty input", ErrFrame)
		}
	case Resize:
		cols, rows := ParseResize(payload)
		if cols == 0 || rows == 0 || cols > MaxSide || rows > MaxSide {
			return 0, nil, fmt.Errorf("%w: resize %dx%d (cols x rows, 1..%d each)", ErrFrame, cols, rows, MaxSide)
		}
	}
	d.n = n
	return typ, payload, nil
}

// Frame returns the bytes of the frame the last Next returned, header
// included, valid until the next call; nothing after an error.
func (d *Reader) Frame() []byte { return d.buf[:d.n] }

func cut(err error, part string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: cut short in its %s", ErrFrame, part)
	}
	return fmt.Errorf("termsock: read frame: %w", err)
}
