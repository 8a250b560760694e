package main

import (
	"fmt"
	"io"
	"unicode/utf8"
)

// escaper writes everything sluicectl prints, so that no byte a helper
// sent (a session's user or machine, an error text, an audit field) can
// drive the admin's terminal: C0 controls other than newline and tab, DEL
// and C1 controls, and the format characters that reorder text (bidi
// overrides), become \uXXXX, which is also what they are in a JSON
// string; a byte that is not UTF-8 becomes \xNN. A rune split across two
// writes is held back until the rest arrives.
type escaper struct {
	w    io.Writer
	held []byte
}

func newEscaper(w io.Writer) *escaper { return &escaper{w: w} }

func (e *escaper) Write(p []byte) (int, error) {
	b := append(e.held, p...)
	e.held = nil
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			if !utf8.FullRune(b) {
				e.held = append([]byte(nil), b...)
				b = nil
				continue
			}
			out = fmt.Appendf(out, `\x%02x`, b[0])
		case r == '\n' || r == '\t':
			out = append(out, b[0])
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || isFormat(r):
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	if _, err := e.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a rune left incomplete at the end, escaped byte by byte.
func (e *escaper) Flush() {
	for _, c := range e.held {
		fmt.Fprintf(e.w, `\x%02x`, c)
	}
	e.held = nil
}
