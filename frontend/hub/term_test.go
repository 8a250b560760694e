package hub

import (
	"fmt"
	"testing"

	"sluice/internal/termsock"
)

// A recorded session's fd is the recorder's socket: typed bytes and
// window sizes reach it as frames, in the order they were given, and its
// output and its close reach the viewer as a pty's do.
func TestRecordedSessionSocket(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	rec, theirs, err := termsock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	s, err := h.Adopt("r1", theirs)
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{v: s.Attach("alice", ModeOwner)}
	ctx := ctx(t)
	if err := c.v.Input([]byte("echo hi\r")); err != nil {
		t.Fatal(err)
	}
	// Sizes no reader of the frames takes (the recorder's, a fleet
	// relay's) are the page's error, not a frame that ends the stream.
	for _, sz := range [][2]uint16{{termsock.MaxSide + 1, 37}, {123, termsock.MaxSide + 1}, {0, 37}} {
		if err := c.v.Resize(sz[0], sz[1]); err == nil {
			t.Fatalf("resize %dx%d taken", sz[0], sz[1])
		}
	}
	if err := c.v.Resize(123, 37); err != nil {
		t.Fatal(err)
	}
	if err := c.v.Input([]byte("stty size\r")); err != nil {
		t.Fatal(err)
	}
	var got []string
	var buf []byte
	b := make([]byte, 4096)
	for len(got) < 3 {
		n, err := rec.Read(b)
		if err != nil {
			t.Fatalf("recorder read: %v after %q", err, got)
		}
		buf = append(buf, b[:n]...)
		for {
			typ, p, k, err := termsock.Next(buf)
			if err != nil {
				t.Fatalf("the hub wrote something that is not a frame: %v", err)
			}
			if k == 0 {
				break
			}
			if typ == termsock.Resize {
				cols, rows := termsock.ParseResize(p)
				got = append(got, fmt.Sprintf("resize %dx%d", cols, rows))
			} else {
				got = append(got, "input "+string(p))
			}
			buf = buf[k:]
		}
	}
	if want := []string{"input echo hi\r", "resize 123x37", "input stty size\r"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("recorder got %q, want %q", got, want)
	}
	rec.Write([]byte("37 123\r\n"))
	c.until(t, ctx, "37 123")
	rec.Close()
	c.toEnd(t, ctx)
}
