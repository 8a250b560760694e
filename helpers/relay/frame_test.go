package relay

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/sys/unix"
)

func hdr(t byte, n int) []byte { return []byte{t, byte(n >> 8), byte(n)} }

func sizeBody(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, byte(x>>8), byte(x))
	}
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// readAll reads frames until an error and returns them and the error.
func readAll(r io.Reader) ([]Frame, error) {
	d := NewDeframer(r)
	var fs []Frame
	for {
		f, err := d.Next()
		if err != nil {
			return fs, err
		}
		f.Input = bytes.Clone(f.Input)
		fs = append(fs, f)
	}
}

func TestDeframe(t *testing.T) {
	ws := unix.Winsize{Row: 40, Col: 120, Xpixel: 960, Ypixel: 800}
	big := bytes.Repeat([]byte{'x'}, MaxFrame)
	cases := []struct {
		name string
		in   []byte
		want []Frame
		bad  string // "" = ends with io.EOF
	}{
		{"nothing", nil, nil, ""},
		{"one key", AppendInput(nil, []byte("a")), []Frame{{Type: FrameInput, Input: []byte("a")}}, ""},
		{"ctrl-c", AppendInput(nil, []byte{3}), []Frame{{Type: FrameInput, Input: []byte{3}}}, ""},
		{"size then keys", AppendInput(AppendSize(nil, ws), []byte("ls\r")),
			[]Frame{{Type: FrameSize, Size: ws}, {Type: FrameInput, Input: []byte("ls\r")}}, ""},
		{"a frame of the limit", AppendInput(nil, big), []Frame{{Type: FrameInput, Input: big}}, ""},
		{"split past the limit", AppendInput(nil, append(big, 'y')),
			[]Frame{{Type: FrameInput, Input: big}, {Type: FrameInput, Input: []byte("y")}}, ""},
		{"bytes that look like frames", AppendInput(nil, hdr(FrameSize, 8)), []Frame{{Type: FrameInput, Input: hdr(FrameSize, 8)}}, ""},
		{"largest size", AppendSize(nil, unix.Winsize{Row: MaxDim, Col: MaxDim}), []Frame{{Type: FrameSize, Size: unix.Winsize{Row: MaxDim, Col: MaxDim}}}, ""},

		{"unknown type", cat(hdr(0, 1), []byte("a")), nil, "type 0"},
		{"type 3", cat(hdr(3, 1), []byte("a")), nil, "type 0x3"},
		{"raw keys, unframed", []byte("ls\r"), nil, "type 0x6c"},
		{"empty input", hdr(FrameInput, 0), nil, "input of 0 bytes"},
		{"input past the limit", cat(hdr(FrameInput, MaxFrame+1), big, []byte("y")), nil, "input of 16385 bytes"},
		{"largest length", hdr(FrameInput, 0xffff), nil, "input of 65535 bytes"},
		{"size of 7 bytes", cat(hdr(FrameSize, 7), make([]byte, 7)), nil, "size of 7 bytes"},
		{"size of 9 bytes", cat(hdr(FrameSize, 9), make([]byte, 9)), nil, "size of 9 bytes"},
		{"zero rows", cat(hdr(FrameSize, 8), sizeBody(0, 80, 0, 0)), nil, "size 0x80"},
		{"zero cols", cat(hdr(FrameSize, 8), sizeBody(24, 0, 0, 0)), nil, "size 24x0"},
		{"rows past the limit", cat(hdr(FrameSize, 8), sizeBody(MaxDim+1, 80, 0, 0)), nil, "size 4097x80"},
		{"cols past the limit", cat(hdr(FrameSize, 8), sizeBody(24, 0xffff, 0, 0)), nil, "size 24x65535"},
		{"header cut short", []byte{FrameInput, 0}, nil, "cut short in its header"},
		{"input cut short", cat(hdr(FrameInput, 5), []byte("ab")), nil, "cut short in its input"},
		{"size cut short", cat(hdr(FrameSize, 8), sizeBody(24)), nil, "cut short in its size"},
		{"good, then bad", cat(AppendInput(nil, []byte("ok")), hdr(9, 0)),
			[]Frame{{Type: FrameInput, Input: []byte("ok")}}, "type 0x9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// One byte at a time as well: frames arrive in any pieces.
			for _, r := range []io.Reader{bytes.NewReader(c.in), iotest.OneByteReader(bytes.NewReader(c.in))} {
				got, err := readAll(r)
				if len(got) != len(c.want) {
					t.Fatalf("frames %+v, want %+v (err %v)", got, c.want, err)
				}
				for i := range got {
					if got[i].Type != c.want[i].Type || !bytes.Equal(got[i].Input, c.want[i].Input) || got[i].Size != c.want[i].Size {
						t.Fatalf("frame %d: %+v, want %+v", i, got[i], c.want[i])
					}
				}
				if c.bad == "" {
					if err != io.EOF {
						t.Fatalf("ended with %v, want io.EOF", err)
					}
					continue
				}
				if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), c.bad) {
					t.Fatalf("ended with %v, want a bad frame: %q", err, c.bad)
				}
			}
		})
	}
}

// A reader's own error is not a bad frame, and is not hidden.
func TestDeframeReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := NewDeframer(io.MultiReader(bytes.NewReader([]byte{FrameInput}), iotest.ErrReader(boom))).Next()
	if !errors.Is(err, boom) || errors.Is(err, ErrBadFrame) {
		t.Fatalf("err %v, want boom", err)
	}
}

func TestAppendInputEmpty(t *testing.T) {
	if b := AppendInput(nil, nil); len(b) != 0 {
		t.Fatalf("%q for no input", b)
	}
}

// FuzzDeframe: whatever the channel carries, the deframer takes only
// frames the fleet helper could have written, in order, and they encode
// back to exactly the bytes they came from; it stops at the first byte
// that is not one, with ErrBadFrame, or at the end.
func FuzzDeframe(f *testing.F) {
	ws := unix.Winsize{Row: 24, Col: 80}
	for _, s := range [][]byte{
		nil, {0}, {1}, {1, 0, 0}, {1, 0, 1, 'a'}, {2, 0, 8}, {1, 0xff, 0xff},
		AppendSize(nil, ws), AppendInput(AppendSize(nil, ws), []byte("echo hi\r")),
		cat(hdr(FrameSize, 8), sizeBody(0, 80, 0, 0)), cat(hdr(FrameInput, MaxFrame+1)),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := readAll(bytes.NewReader(b))
		var re []byte
		for _, fr := range fs {
			switch fr.Type {
			case FrameInput:
				if len(fr.Input) == 0 || len(fr.Input) > MaxFrame {
					t.Fatalf("input frame of %d bytes", len(fr.Input))
				}
				re = AppendInput(re, fr.Input)
			case FrameSize:
				s := fr.Size
				if s.Row == 0 || s.Col == 0 || s.Row > MaxDim || s.Col > MaxDim {
					t.Fatalf("size %+v taken", s)
				}
				re = AppendSize(re, s)
			default:
				t.Fatalf("frame type %d taken", fr.Type)
			}
		}
		if !bytes.HasPrefix(b, re) {
			t.Fatalf("frames %x are not the start of %x", re, b)
		}
		switch {
		case err == io.EOF:
			if len(re) != len(b) {
				t.Fatalf("EOF after %d of %d bytes", len(re), len(b))
			}
		case errors.Is(err, ErrBadFrame):
			if len(re) == len(b) {
				t.Fatalf("bad frame %v with every byte taken", err)
			}
		default:
			t.Fatalf("err %v", err)
		}
	})
}
