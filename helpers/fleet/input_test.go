package fleet

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
	"sluice/internal/termsock"
)

// The gateway side of a stream's input, on a real pty: what the frontend
// writes to the master goes out as input frames, byte for byte; the size
// it sets goes out as a size frame (first, and on each change, zero sizes
// skipped); closing the master ends the input at a frame boundary.
type frame struct {
	typ        byte
	p          []byte
	cols, rows uint16
}

func TestPumpInput(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	peer, err := openPeer(master)
	if err != nil {
		t.Fatal(err)
	}
	if err := rawAndSize(slave, 24, 80); err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	pumped := make(chan error, 1)
	go func() { pumped <- pumpInput(peer, w, 10*time.Millisecond) }()
	d := termsock.NewReader(r)
	next := func() frame {
		t.Helper()
		got := make(chan frame, 1)
		go func() {
			typ, p, err := d.Next()
			if err != nil {
				t.Errorf("frame: %v", err)
			}
			f := frame{typ: typ, p: bytes.Clone(p)}
			if typ == termsock.Resize {
				f.cols, f.rows = termsock.ParseResize(p)
			}
			got <- f
		}()
		select {
		case f := <-got:
			return f
		case <-time.After(5 * time.Second):
			t.Fatal("no frame within 5 s")
		}
		return frame{}
	}
	if f := next(); f.typ != termsock.Resize || f.rows != 24 || f.cols != 80 {
		t.Fatalf("first frame %+v, want the size 24x80", f)
	}
	// Keys, raw: Ctrl-C, CR and bytes that look like frames go as typed.
	typed := "ls\r\x03\x01\x00\x05" + strings.Repeat("p", 20000)
	go master.Write([]byte(typed))
	var got []byte
	for len(got) < len(typed) {
		f := next()
		if f.typ != termsock.Input || len(f.p) > termsock.MaxPayload {
			t.Fatalf("frame %+v amid the keys", f)
		}
		got = append(got, f.p...)
	}
	if string(got) != typed {
		t.Fatalf("sent %q, want %q", got, typed)
	}
	// A resize by the frontend, between keys: found by the poll.
	if err := pty.SetSize(master, 50, 132); err != nil {
		t.Fatal(err)
	}
	if f := next(); f.typ != termsock.Resize || f.rows != 50 || f.cols != 132 {
		t.Fatalf("frame %+v, want the size 50x132", f)
	}
	// A size the relay would refuse is not sent; keys still are.
	unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{})
	time.Sleep(50 * time.Millisecond)
	master.Write([]byte("k"))
	if f := next(); f.typ != termsock.Input || string(f.p) != "k" {
		t.Fatalf("frame %+v, want the key k", f)
	}
	master.Close()
	select {
	case <-pumped:
	case <-time.After(5 * time.Second):
		t.Fatal("input goes on after the master closed")
	}
	if _, _, err := d.Next(); err != io.EOF {
		t.Fatalf("after the master closed: %v, want io.EOF", err)
	}
}

// A host that stops reading (ssh's stdin gone) ends the input.
func TestPumpInputWriteFails(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	peer, err := openPeer(master)
	if err != nil {
		t.Fatal(err)
	}
	rawAndSize(slave, 24, 80)
	r, w, _ := os.Pipe()
	r.Close()
	pumped := make(chan error, 1)
	go func() { pumped <- pumpInput(peer, w, 10*time.Millisecond) }()
	master.Write([]byte("x"))
	select {
	case err := <-pumped:
		if err == nil {
			t.Fatal("no error for a closed pipe")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("input goes on with nobody reading")
	}
}
