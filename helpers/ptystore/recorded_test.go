package ptystore

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/termsock"
	"sluice/msg"
)

// fakeRecorder holds the recorder's end of a session socket: it reads
// until the other side shuts it down, then takes a while ending the
// shell (as the hangup helper's grace would) before it closes its end.
type fakeRecorder struct {
	mine   *os.File
	ended  atomic.Bool // set just before the close
	closed chan struct{}
}

func startRecorder(t *testing.T, linger time.Duration) (*fakeRecorder, *os.File) {
	t.Helper()
	mine, theirs, err := termsock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRecorder{mine: mine, closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		b := make([]byte, 4096)
		for {
			if _, err := mine.Read(b); err != nil {
				break
			}
		}
		time.Sleep(linger)
		r.ended.Store(true)
		mine.Close()
	}()
	t.Cleanup(func() { mine.Close() })
	return r, theirs
}

// A recorded session's fd is the recorder's socket. Ending it shuts the
// socket down for every copy (the frontend can type no more), never asks
// the hangup helper (that is the recorder's to do, with the shell's
// master), and returns only once the recorder has closed its end.
func TestRecordedSessionDrop(t *testing.T) {
	asked := make(chan struct{}, 1)
	h := newHarness(t, Config{Hangup: func(ctx context.Context, master *os.File) error {
		asked <- struct{}{}
		return nil
	}})
	rec, theirs := startRecorder(t, 300*time.Millisecond)
	front, err := dupFile(theirs, "front")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	if _, err := h.store.Put(sessionInfo("r1", "alice"), theirs); err != nil {
		t.Fatal(err)
	}
	h.fds.waitMsg(t, "FDSTORE=1")
	if err := h.store.Drop(context.Background(), "r1", nil); err != nil {
		t.Fatal(err)
	}
	if !rec.ended.Load() {
		t.Fatal("Drop returned before the recorder ended the session")
	}
	select {
	case <-asked:
		t.Fatal("the hangup helper was asked to end a recorded session's socket")
	default:
	}
	if _, err := front.Write(termsock.AppendInput(nil, []byte("x"))); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("the frontend's copy still takes input: %v", err)
	}
	// The watcher may see the recorder's close first, as it may see a
	// hung-up pty's.
	select {
	case got := <-h.drops:
		if got != "r1 drop" && got != "r1 shell exited" {
			t.Fatalf("dropped %q", got)
		}
	case <-time.After(waitLimit):
		t.Fatal("not dropped")
	}
	if h.store.Len() != 0 {
		t.Fatal("still held")
	}
}

// A recorder that does not end the session in time: Drop fails, saying
// so, and the session stays held (as a failed hangup leaves it) until the
// recorder closes.
func TestRecordedSessionDropTimeout(t *testing.T) {
	h := newHarness(t, Config{Hangup: func(context.Context, *os.File) error { return nil }})
	rec, theirs := startRecorder(t, time.Second)
	if _, err := h.store.Put(sessionInfo("r2", "alice"), theirs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.store.Drop(ctx, "r2", nil); !errors.Is(err, ErrHangup) {
		t.Fatalf("Drop = %v, want ErrHangup", err)
	}
	if h.store.Len() != 1 {
		t.Fatal("session forgotten although its recorder goes on")
	}
	<-rec.closed
	h.waitDrop("r2 shell exited")
}

// The recorder killed: its end closes, and the watcher drops the session
// as it drops a pty whose shell exited. A stored socket comes back from
// the fd store as a recorded session.
func TestRecordedSessionRecorderGone(t *testing.T) {
	h := newHarness(t, Config{})
	_, theirs := startRecorder(t, 0)
	stored, err := dupFile(theirs, "stored")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Put(sessionInfo("r3", "alice"), theirs); err != nil {
		t.Fatal(err)
	}
	info := sessionInfo("r4", "bob")
	info.Sharing = msg.SharePrivate
	name, _ := fdName(info, 0)
	rec4, theirs4 := startRecorder(t, 0)
	h.store.Adopt([]*os.File{named(t, theirs4, name)})
	if got := h.store.List(nil); len(got) != 2 {
		t.Fatalf("held %d sessions, want the put and the adopted one", len(got))
	}
	// The recorder of r3 goes away (every copy of the other end stays).
	unix.Shutdown(int(stored.Fd()), unix.SHUT_WR)
	stored.Close()
	h.waitDrop("r3 shell exited")
	if h.store.Len() != 1 {
		t.Fatal("the adopted session went too")
	}
	// Dropped without a hangup helper: shut down all the same.
	if err := h.store.Drop(context.Background(), "r4", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec4.closed:
	case <-time.After(waitLimit):
		t.Fatal("the recorder never saw the session end")
	}
}
