package record

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
	"unicode/utf8"

	"lukechampine.com/blake3"
)

// KeySize is the seal key's length.
const KeySize = 32

// Header is the asciicast v2 header line, with sluice's own fields in
// "sluice" (players ignore keys they do not know).
type Header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Env       map[string]string `json:"env,omitempty"`
	Title     string            `json:"title,omitempty"`
	Sluice    Meta              `json:"sluice"`
}

// Meta is who and where, as the shell helper said.
type Meta struct {
	ID        string `json:"id"`
	Requester string `json:"requester"`
	UnixUser  string `json:"unix_user"`
	Machine   string `json:"machine"`
	Input     bool   `json:"input,omitempty"`
	// Started is unix milliseconds (Timestamp has only seconds).
	Started int64 `json:"started"`
}

// Seal labels: a seal line is [T, "s", "LABEL HEX"].
const (
	labelSeal = "seal"
	labelEnd  = "end"
)

// ErrLimit: the recording reached its size limit.
var ErrLimit = errors.New("recording size limit reached")

// ErrClosed: the writer failed before or was ended; nothing more is written.
var ErrClosed = errors.New("recording closed")

// Writer appends events to a recording, each followed by a seal, each
// pair in one write(2): a process killed at any moment leaves whole,
// sealed lines. A write that fails is cut back to the last seal.
type Writer struct {
	f     *os.File
	key   []byte
	chain *chainHash // keyed BLAKE3 over every byte of the file so far
	off   int64
	max   int64 // 0: no limit
	start time.Time
	buf   []byte
	dead  error
}

// NewWriter writes h's line and its seal to f (empty, opened for writing).
// max bounds the file's size (0: no bound).
func NewWriter(f *os.File, key []byte, h Header, start time.Time, max int64) (*Writer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("record: seal key is %d bytes, want %d", len(key), KeySize)
	}
	w := &Writer{f: f, key: key, chain: newChainHash(key), max: max, start: start, buf: make([]byte, 0, 64<<10)}
	line, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("record: header: %w", err)
	}
	w.buf = append(append(w.buf[:0], line...), '\n')
	if err := w.commit(0, labelSeal); err != nil {
		return nil, err
	}
	return w, nil
}

// Size is the bytes written and sealed.
func (w *Writer) Size() int64 { return w.off }

// Event records one event of kind 'o', 'i' or 'r' at now.
func (w *Writer) Event(now time.Time, kind byte, data []byte) error {
	t := now.Sub(w.start).Seconds()
	b := w.buf[:0]
	b = append(b, '[')
	b = strconv.AppendFloat(b, t, 'f', 6, 64)
	b = append(b, ", \""...)
	b = append(b, kind)
	b = append(b, "\", "...)
	b = appendJSONString(b, data)
	b = append(b, "]\n"...)
	w.buf = b
	return w.commit(t, labelSeal)
}

// End writes the end seal: the recording is complete.
func (w *Writer) End(now time.Time) error {
	w.buf = w.buf[:0]
	return w.commit(now.Sub(w.start).Seconds(), labelEnd)
}

// commit seals w.buf (lines not yet hashed) and writes both at once.
func (w *Writer) commit(t float64, label string) error {
	if w.dead != nil {
		return w.dead
	}
	w.chain.Write(w.buf)
	mac := sealMAC(w.key, label, w.chain.Sum())
	n := len(w.buf)
	w.buf = strconv.AppendFloat(append(w.buf, '['), t, 'f', 6, 64)
	w.buf = append(w.buf, ", \"s\", \""...)
	w.buf = append(w.buf, label...)
	w.buf = append(w.buf, ' ')
	w.buf = hex.AppendEncode(w.buf, mac)
	w.buf = append(w.buf, "\"]\n"...)
	if w.max > 0 && w.off+int64(len(w.buf)) > w.max {
		w.dead = ErrLimit
		return w.dead
	}
	if _, err := w.f.Write(w.buf); err != nil {
		// A short write would leave half a line: cut back to the last
		// seal, so what is there still parses and verifies.
		if terr := w.f.Truncate(w.off); terr != nil {
			err = fmt.Errorf("%w (and cutting back: %v)", err, terr)
		}
		w.dead = fmt.Errorf("record: write: %w", err)
		return w.dead
	}
	// The seal line is part of what the next seal covers.
	w.chain.Write(w.buf[n:])
	w.off += int64(len(w.buf))
	if label == labelEnd {
		w.dead = ErrClosed
	}
	return nil
}

// sealMAC binds a label to the chain value, so a seal cannot be turned
// into an end seal (a cut recording passed off as complete).
func sealMAC(key []byte, label string, chain []byte) []byte {
	h := blake3.New(32, key)
	h.Write([]byte("sluice recording seal v1\x00"))
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(chain)
	return h.Sum(nil)
}

// appendJSONString appends b as a JSON string: printable runes as they
// are, newline, carriage return, tab, backspace and form feed as \n \r
// \t \b \f, other control characters as \uXXXX, and bytes that are not
// UTF-8 as U+FFFD (JSON strings hold text only; asciinema does the same).
func appendJSONString(dst, b []byte) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(b); {
		// A run of printable ASCII goes in one append: most output is.
		// Eight bytes are checked at a time while they are plain.
		j := i
		for j+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[j:])) {
			j += 8
		}
		for j < len(b) && b[j] >= 0x20 && b[j] < 0x7f && b[j] != '"' && b[j] != '\\' {
			j++
		}
		if j > i {
			dst = append(dst, b[i:j]...)
			i = j
			continue
		}
		c := b[i]
		if c >= 0x20 && c < 0x7f {
			dst = append(dst, '\\', c)
			i++
			continue
		}
		if c < 0x20 || c == 0x7f {
			if e := shortEscape[c&0x1f]; c < 0x20 && e != 0 {
				dst = append(dst, '\\', e)
			} else {
				dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, "\\ufffd"...)
		} else if r >= 0x80 && r < 0xa0 {
			// C1 controls: not printable.
			dst = append(dst, '\\', 'u', '0', '0', hexd[r>>4], hexd[r&0xf])
		} else {
			dst = append(dst, b[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}

// shortEscape is JSON's two-character escape of a control character, or 0.
var shortEscape = [32]byte{'\b': 'b', '\t': 't', '\n': 'n', '\f': 'f', '\r': 'r'}

// plain8 reports whether none of the eight bytes of x needs escaping:
// each is in 0x20..0x7e and is not '"' or '\\' (SWAR: a byte's high bit
// in each mask says "this byte, or a borrow into it, hit").
func plain8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	low := (x - 0x20*ones) & ^x    // a byte below 0x20
	high := x | (x + ones)         // a byte of 0x7f or more
	quote := (x ^ '"'*ones) - ones // a byte equal to '"' ...
	quote &= ^(x ^ '"'*ones)       // ... is zero after the xor
	bslash := (x ^ '\\'*ones) - ones
	bslash &= ^(x ^ '\\'*ones)
	return (low|high|quote|bslash)&highs == 0
}

// completeUTF8 is the length of b's prefix that does not end inside a
// multibyte sequence: the rest (at most 3 bytes) waits for the next read,
// so a character split across reads is recorded whole.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}
