package termsock

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func frameHdr(t byte, n int) []byte { return []byte{t, byte(n >> 8), byte(n)} }

func resizeBody(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, byte(x>>8), byte(x))
	}
	return b
}

func joinBytes(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

type readFrame struct {
	typ     byte
	payload []byte
	raw     []byte // Reader.Frame
}

// readFrames reads frames until an error and returns them and the error.
func readFrames(r io.Reader) ([]readFrame, error) {
	d := NewReader(r)
	var fs []readFrame
	for {
		typ, p, err := d.Next()
		if err != nil {
			if len(d.Frame()) != 0 {
				return fs, errors.New("Frame() after an error is not empty")
			}
			return fs, err
		}
		fs = append(fs, readFrame{typ, bytes.Clone(p), bytes.Clone(d.Frame())})
	}
}

func TestReader(t *testing.T) {
	big := bytes.Repeat([]byte{'x'}, MaxPayload)
	in := func(s string) readFrame { return readFrame{typ: Input, payload: []byte(s)} }
	rs := func(cols, rows uint16) readFrame { return readFrame{typ: Resize, payload: resizeBody(cols, rows)} }
	cases := []struct {
		name string
		in   []byte
		want []readFrame
		bad  string // "" = ends with io.EOF
	}{
		{"nothing", nil, nil, ""},
		{"one key", AppendInput(nil, []byte("a")), []readFrame{in("a")}, ""},
		{"ctrl-c", AppendInput(nil, []byte{3}), []readFrame{in("\x03")}, ""},
		{"size then keys", AppendInput(AppendResize(nil, 120, 40), []byte("ls\r")), []readFrame{rs(120, 40), in("ls\r")}, ""},
		{"a frame of the limit", AppendInput(nil, big), []readFrame{in(string(big))}, ""},
		{"split past the limit", AppendInput(nil, append(big, 'y')), []readFrame{in(string(big)), in("y")}, ""},
		{"bytes that look like frames", AppendInput(nil, frameHdr(Resize, 4)), []readFrame{in(string(frameHdr(Resize, 4)))}, ""},
		{"largest size", AppendResize(nil, MaxSide, MaxSide), []readFrame{rs(MaxSide, MaxSide)}, ""},
		{"smallest size", AppendResize(nil, 1, 1), []readFrame{rs(1, 1)}, ""},

		{"unknown type", joinBytes(frameHdr(0, 1), []byte("a")), nil, "type 0x0"},
		{"type 3", joinBytes(frameHdr(3, 1), []byte("a")), nil, "type 0x3"},
		{"the old relay's input type", joinBytes(frameHdr(1, 1), []byte("a")), nil, "type 0x1"},
		{"the old relay's size type", joinBytes(frameHdr(2, 8), resizeBody(24, 80, 0, 0)), nil, "type 0x2"},
		{"raw keys, unframed", []byte("ls\r"), nil, "type 0x6c"},
		{"empty input", frameHdr(Input, 0), nil, "empty input"},
		{"input past the limit", joinBytes(frameHdr(Input, MaxPayload+1), big, []byte("y")), nil, "4097-byte payload"},
		{"largest length", frameHdr(Input, 0xffff), nil, "65535-byte payload"},
		{"resize of 3 bytes", joinBytes(frameHdr(Resize, 3), make([]byte, 3)), nil, "3-byte resize"},
		{"resize of 5 bytes", joinBytes(frameHdr(Resize, 5), make([]byte, 5)), nil, "5-byte resize"},
		{"resize of the old relay's 8 bytes", joinBytes(frameHdr(Resize, 8), resizeBody(80, 24, 0, 0)), nil, "8-byte resize"},
		{"zero rows", joinBytes(frameHdr(Resize, 4), resizeBody(80, 0)), nil, "resize 80x0"},
		{"zero cols", joinBytes(frameHdr(Resize, 4), resizeBody(0, 24)), nil, "resize 0x24"},
		{"rows past the limit", joinBytes(frameHdr(Resize, 4), resizeBody(80, MaxSide+1)), nil, "resize 80x4097"},
		{"cols past the limit", joinBytes(frameHdr(Resize, 4), resizeBody(0xffff, 24)), nil, "resize 65535x24"},
		{"header cut short", []byte{Input, 0}, nil, "cut short in its header"},
		{"input cut short", joinBytes(frameHdr(Input, 5), []byte("ab")), nil, "cut short in its payload"},
		{"resize cut short", joinBytes(frameHdr(Resize, 4), resizeBody(80)), nil, "cut short in its payload"},
		{"good, then bad", joinBytes(AppendInput(nil, []byte("ok")), frameHdr(9, 0)), []readFrame{in("ok")}, "type 0x9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// One byte at a time as well: frames arrive in any pieces.
			for _, r := range []io.Reader{bytes.NewReader(c.in), iotest.OneByteReader(bytes.NewReader(c.in))} {
				got, err := readFrames(r)
				if len(got) != len(c.want) {
					t.Fatalf("frames %+v, want %+v (err %v)", got, c.want, err)
				}
				var raw []byte
				for i := range got {
					if got[i].typ != c.want[i].typ || !bytes.Equal(got[i].payload, c.want[i].payload) {
						t.Fatalf("frame %d: %+v, want %+v", i, got[i], c.want[i])
					}
					raw = append(raw, got[i].raw...)
				}
				// Frame gives back the very bytes read, to forward as they came.
				if !bytes.HasPrefix(c.in, raw) {
					t.Fatalf("frames' bytes %x are not the start of %x", raw, c.in)
				}
				if c.bad == "" {
					if err != io.EOF {
						t.Fatalf("ended with %v, want io.EOF", err)
					}
					continue
				}
				if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), c.bad) {
					t.Fatalf("ended with %v, want a bad frame: %q", err, c.bad)
				}
			}
		})
	}
}

// A reader's own error is not a bad frame, and is not hidden.
func TestReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	_, _, err := NewReader(io.MultiReader(bytes.NewReader([]byte{Input}), iotest.ErrReader(boom))).Next()
	if !errors.Is(err, boom) || errors.Is(err, ErrFrame) {
		t.Fatalf("err %v, want boom", err)
	}
}

func TestAppendInputEmpty(t *testing.T) {
	if b := AppendInput(nil, nil); len(b) != 0 {
		t.Fatalf("%q for no input", b)
	}
}

// FuzzReader: whatever the stream carries, the Reader takes only frames
// AppendInput and AppendResize could have written, in order, each one
// Next takes whole, and they encode back to exactly the bytes they came
// from; it stops at the first byte that is not one, with ErrFrame, or at
// the end.
func FuzzReader(f *testing.F) {
	for _, s := range [][]byte{
		nil, {0}, {Input}, {Input, 0, 0}, {Input, 0, 1, 'a'}, {Resize, 0, 4}, {Input, 0xff, 0xff},
		{1, 0, 1, 'a'}, {2, 0, 8},
		AppendResize(nil, 80, 24), AppendInput(AppendResize(nil, 80, 24), []byte("echo hi\r")),
		joinBytes(frameHdr(Resize, 4), resizeBody(80, 0)), frameHdr(Input, MaxPayload+1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := readFrames(bytes.NewReader(b))
		var re, raw []byte
		for _, fr := range fs {
			if typ, p, n, err := Next(fr.raw); err != nil || n != len(fr.raw) || typ != fr.typ || !bytes.Equal(p, fr.payload) {
				t.Fatalf("frame %x: Next = %q, %q, %d, %v", fr.raw, typ, p, n, err)
			}
			raw = append(raw, fr.raw...)
			switch fr.typ {
			case Input:
				if len(fr.payload) == 0 || len(fr.payload) > MaxPayload {
					t.Fatalf("input frame of %d bytes", len(fr.payload))
				}
				re = AppendInput(re, fr.payload)
			case Resize:
				cols, rows := ParseResize(fr.payload)
				if cols == 0 || rows == 0 || cols > MaxSide || rows > MaxSide {
					t.Fatalf("resize %dx%d taken", cols, rows)
				}
				re = AppendResize(re, cols, rows)
			default:
				t.Fatalf("frame type %d taken", fr.typ)
			}
		}
		if !bytes.Equal(re, raw) || !bytes.HasPrefix(b, re) {
			t.Fatalf("frames %x (read as %x) are not the start of %x", re, raw, b)
		}
		switch {
		case err == io.EOF:
			if len(re) != len(b) {
				t.Fatalf("EOF after %d of %d bytes", len(re), len(b))
			}
		case errors.Is(err, ErrFrame):
			if len(re) == len(b) {
				t.Fatalf("bad frame %v with every byte taken", err)
			}
		default:
			t.Fatalf("err %v", err)
		}
	})
}
