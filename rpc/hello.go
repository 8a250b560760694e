package rpc

import (
	"fmt"
)

// Limits of the handshake lines, newline included.
const (
	MaxIntentLine  = 257 // 256 bytes of intent and '\n'
	BuildIDLine    = 65  // 64 lowercase hex digits and '\n'
	busyLine       = "sluice busy"
	defaultTimeout = 5e9
)

// Hello is one side's handshake: its intent and the BLAKE3 build ID of its
// executable keyed by that intent (see package rpc/buildid).
type Hello struct {
	Intent  string
	BuildID string
}

// Valid reports whether h can be put on the wire: intent of printable ASCII
// without newline, at most 256 bytes; build ID of 64 lowercase hex digits.
func (h Hello) Valid() error {
	if err := validIntent(h.Intent); err != nil {
		return err
	}
	return validBuildID(h.BuildID)
}

func validIntent[T string | []byte](s T) error {
	if len(s) == 0 || len(s) > MaxIntentLine-1 {
		return fmt.Errorf("rpc: intent of %d bytes, want 1..%d", len(s), MaxIntentLine-1)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("rpc: intent has non-printable byte 0x%02x at %d", s[i], i)
		}
	}
	return nil
}

func validBuildID[T string | []byte](s T) error {
	if len(s) != BuildIDLine-1 {
		return fmt.Errorf("rpc: build ID of %d characters, want %d", len(s), BuildIDLine-1)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("rpc: build ID has non-lowercase-hex byte 0x%02x at %d", c, i)
		}
	}
	return nil
}

// appendLines appends "intent\nbuildid\n".
func (h Hello) appendLines(b []byte) []byte {
	b = append(b, h.Intent...)
	b = append(b, '\n')
	b = append(b, h.BuildID...)
	return append(b, '\n')
}

// ParseHello reads the two handshake lines at the start of b. It returns
// the hello, the number of bytes used, and need=true when b is a valid
// prefix that is still too short. Limits are enforced on prefixes too, so
// a reader can stop as soon as a line is already too long.
func ParseHello(b []byte) (h Hello, n int, need bool, err error) {
	intent, id, n, need, err := parseHello(b)
	if err != nil || need {
		return Hello{}, 0, need, err
	}
	return Hello{Intent: string(intent), BuildID: string(id)}, n, false, nil
}

// parseHello is ParseHello with the lines left in b, for the two readers
// that only compare them with what they expect (no copies on every call).
func parseHello(b []byte) (intent, id []byte, n int, need bool, err error) {
	intent, n1, need, err := parseLine(b, MaxIntentLine)
	if err != nil || need {
		return nil, nil, 0, need, err
	}
	if err := validIntent(intent); err != nil {
		return nil, nil, 0, false, err
	}
	id, n2, need, err := parseLine(b[n1:], BuildIDLine)
	if err != nil || need {
		return nil, nil, 0, need, err
	}
	if err := validBuildID(id); err != nil {
		return nil, nil, 0, false, err
	}
	return intent, id, n1 + n2, false, nil
}

// parseLine returns the line before the first '\n' in b if it is within max
// bytes (newline included).
func parseLine(b []byte, max int) ([]byte, int, bool, error) {
	lim := len(b)
	if lim > max {
		lim = max
	}
	for i := 0; i < lim; i++ {
		if b[i] == '\n' {
			return b[:i], i + 1, false, nil
		}
	}
	if len(b) >= max {
		return nil, 0, false, fmt.Errorf("rpc: handshake line longer than %d bytes", max)
	}
	return nil, 0, true, nil
}
