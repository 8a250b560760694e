package termsock

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFrames(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxPayload+10)
	stream := AppendInput(nil, []byte("ls\r"))
	stream = AppendResize(stream, 91, 33)
	stream = AppendInput(stream, big)
	var typed []byte
	var sizes [][2]uint16
	frames := 0
	for b := stream; len(b) > 0; {
		typ, p, n, err := Next(b)
		if err != nil || n == 0 {
			t.Fatalf("Next(%d bytes) = %d, %v", len(b), n, err)
		}
		// Every prefix of a frame is incomplete, never an error.
		for k := range n {
			if _, _, m, err := Next(b[:k]); m != 0 || err != nil {
				t.Fatalf("Next of %d of a %d-byte frame = %d, %v", k, n, m, err)
			}
		}
		frames++
		switch typ {
		case Input:
			typed = append(typed, p...)
		case Resize:
			c, r := ParseResize(p)
			sizes = append(sizes, [2]uint16{c, r})
		}
		b = b[n:]
	}
	if want := append([]byte("ls\r"), big...); !bytes.Equal(typed, want) {
		t.Fatalf("typed %d bytes, want %d", len(typed), len(want))
	}
	if len(sizes) != 1 || sizes[0] != [2]uint16{91, 33} || frames != 4 {
		t.Fatalf("sizes %v, %d frames", sizes, frames)
	}
}

func TestBadFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"unknown type", []byte{'x', 0, 1, 'a'}},
		{"raw typing", []byte("ls -l\r")},
		{"oversized", []byte{Input, 0x10, 0x01}},
		{"short resize", []byte{Resize, 0, 2, 0, 80}},
		{"long resize", []byte{Resize, 0, 6, 0, 80, 0, 24, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, n, err := Next(tc.b); n != 0 || !errors.Is(err, ErrFrame) {
				t.Fatalf("Next = %d, %v; want ErrFrame", n, err)
			}
		})
	}
}

func TestIs(t *testing.T) {
	mine, theirs, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	defer theirs.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	seq := os.NewFile(uintptr(sp[0]), "seq")
	defer seq.Close()
	defer unix.Close(sp[1])
	for _, tc := range []struct {
		name string
		f    *os.File
		want bool
	}{{"pair", theirs, true}, {"pipe", r, false}, {"seqpacket", seq, false}, {"regular file", os.Stdin, false}} {
		if got := Is(tc.f); got != tc.want {
			t.Errorf("Is(%s) = %v", tc.name, got)
		}
	}
}
