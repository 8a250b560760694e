package rpc

import (
	"encoding/binary"
	"fmt"
)

// DefaultMaxFrame is the default limit on a request frame's length.
const DefaultMaxFrame = 64 << 10

// ParseFrame reads one length-prefixed frame at the start of b. It returns
// the frame body (aliasing b), bytes used, and need=true when b is a valid
// but incomplete prefix. A length above max is an error as soon as the four
// length bytes are in, before any body is buffered.
func ParseFrame(b []byte, max int) (body []byte, n int, need bool, err error) {
	if len(b) < 4 {
		return nil, 0, true, nil
	}
	l := binary.BigEndian.Uint32(b)
	if uint64(l) > uint64(max) {
		return nil, 0, false, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, l, max)
	}
	end := 4 + int(l)
	if len(b) < end {
		return nil, 0, true, nil
	}
	return b[4:end], end, false, nil
}

// appendFrame appends a length-prefixed frame holding body.
func appendFrame(b, body []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

// appendStringFrame is appendFrame for the error text.
func appendStringFrame(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
