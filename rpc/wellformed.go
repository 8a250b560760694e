package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxMsgpackDepth bounds nesting: at most this many arrays and maps one
// inside another (docs/protocol.md §2); sluice's messages nest four deep.
const maxMsgpackDepth = 32

var errNotMsgpack = errors.New("not well-formed msgpack")

// checkMsgpack reports whether b is exactly one well-formed msgpack value
// whose every length claim fits in the bytes that follow it. The msgpack
// decoder trusts a str/bin length or an array/map count and allocates for
// it up front (and keeps that buffer in its pooled decoder), so a 8-byte
// frame claiming a 2 GiB string made every later call of the process grow
// its heap; checked first, a frame of N bytes can only cost O(N).
func checkMsgpack(b []byte) error {
	n, err := skipValue(b, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("%w: %d bytes after the value", errNotMsgpack, len(b)-n)
	}
	return nil
}

// CheckMsgpack is checkMsgpack for msgpack that arrives other than in a
// frame (ptystore's fd-store names): check it before decoding it.
func CheckMsgpack(b []byte) error { return checkMsgpack(b) }

// skipValue returns the length of the value at the start of b, which sits
// inside depth arrays and maps.
func skipValue(b []byte, depth int) (int, error) {
	if len(b) == 0 {
		return 0, fmt.Errorf("%w: truncated", errNotMsgpack)
	}
	c := b[0]
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return 1, nil
	case c >= 0x80 && c <= 0x8f:
		return skipItems(b, 1, 2*int(c&0x0f), depth)
	case c >= 0x90 && c <= 0x9f:
		return skipItems(b, 1, int(c&0x0f), depth)
	case c >= 0xa0 && c <= 0xbf:
		return skipBytes(b, 1, int(c&0x1f))
	}
	switch c {
	case 0xcc, 0xd0:
		return skipBytes(b, 1, 1)
	case 0xcd, 0xd1:
		return skipBytes(b, 1, 2)
	case 0xca, 0xce, 0xd2:
		return skipBytes(b, 1, 4)
	case 0xcb, 0xcf, 0xd3:
		return skipBytes(b, 1, 8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1..16: type byte and data
		return skipBytes(b, 1, 1+(1<<(c-0xd4)))
	case 0xc4, 0xd9: // bin8, str8
		return skipSized(b, 1, 0)
	case 0xc5, 0xda:
		return skipSized(b, 2, 0)
	case 0xc6, 0xdb:
		return skipSized(b, 4, 0)
	case 0xc7: // ext8, ext16, ext32: the type byte after the length
		return skipSized(b, 1, 1)
	case 0xc8:
		return skipSized(b, 2, 1)
	case 0xc9:
		return skipSized(b, 4, 1)
	case 0xdc, 0xde, 0xdd, 0xdf:
		w := 2
		if c == 0xdd || c == 0xdf {
			w = 4
		}
		count, ok := readLen(b[1:], w)
		if !ok {
			return 0, fmt.Errorf("%w: truncated", errNotMsgpack)
		}
		if c == 0xde || c == 0xdf {
			count *= 2
		}
		return skipItems(b, 1+w, count, depth)
	}
	return 0, fmt.Errorf("%w: byte 0x%02x is no msgpack type", errNotMsgpack, c)
}

// readLen reads a big-endian length of w bytes.
func readLen(b []byte, w int) (int, bool) {
	if len(b) < w {
		return 0, false
	}
	switch w {
	case 1:
		return int(b[0]), true
	case 2:
		return int(binary.BigEndian.Uint16(b)), true
	}
	return int(binary.BigEndian.Uint32(b)), true
}

// skipSized skips a str, bin or ext: a w-byte length, extra bytes, data.
func skipSized(b []byte, w, extra int) (int, error) {
	l, ok := readLen(b[1:], w)
	if !ok {
		return 0, fmt.Errorf("%w: truncated", errNotMsgpack)
	}
	return skipBytes(b, 1+w, extra+l)
}

func skipBytes(b []byte, hdr, l int) (int, error) {
	if l > len(b)-hdr {
		return 0, fmt.Errorf("%w: %d bytes claimed, %d left", errNotMsgpack, l, len(b)-hdr)
	}
	return hdr + l, nil
}

// skipItems skips count values; each takes at least one byte, so a count
// above the bytes left is refused before any is looked at.
// depth counts the containers around this one, so the check is on
// entering a container: an empty one counts as much as a full one.
func skipItems(b []byte, hdr, count, depth int) (int, error) {
	if depth >= maxMsgpackDepth {
		return 0, fmt.Errorf("%w: nested deeper than %d", errNotMsgpack, maxMsgpackDepth)
	}
	if count > len(b)-hdr {
		return 0, fmt.Errorf("%w: %d items claimed, %d bytes left", errNotMsgpack, count, len(b)-hdr)
	}
	off := hdr
	for range count {
		n, err := skipValue(b[off:], depth+1)
		if err != nil {
			return 0, err
		}
		off += n
	}
	return off, nil
}
