package hub

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Many idle sessions, each woken by output of its own later: every
// reader waits on its own pty and wakes for it alone.
func TestWaiterWakesEachSession(t *testing.T) {
	const n = 30
	h := New(Options{})
	defer h.Close()
	type one struct {
		s  *Session
		c  *collector
		sl interface{ Write([]byte) (int, error) }
	}
	all := make([]one, n)
	for i := range all {
		s, sl := rawPty(t, h, fmt.Sprint("idle", i))
		t.Cleanup(func() { sl.Close() })
		all[i] = one{s: s, c: &collector{v: s.Attach("alice", ModeOwner)}, sl: sl}
	}
	// Give the readers time to find their ptys empty and arm them.
	time.Sleep(50 * time.Millisecond)
	for i := n - 1; i >= 0; i-- {
		if _, err := all[i].sl.Write(fmt.Appendf(nil, "hello %d;", i)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			all[i].c.until(t, ctx(t), fmt.Sprintf("hello %d;", i))
		}()
	}
	wg.Wait()
	for i, o := range all {
		if got := o.c.out.String(); got != fmt.Sprintf("hello %d;", i) {
			t.Errorf("session %d saw %q", i, got)
		}
	}
}

// A shell that hangs up while its reader waits for output ends the
// session, and everything before the hangup is delivered.
func TestWaiterSeesHangupWhileIdle(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	s, _ := shell(t, h, "hup", "sh", "-c", "printf start; sleep 0.3; printf end")
	c := &collector{v: s.Attach("alice", ModeOwner)}
	c.toEnd(t, ctx(t))
	if got := c.out.String(); got != "startend" {
		t.Fatalf("got %q", got)
	}
	select {
	case <-s.Done():
	case <-time.After(deadline):
		t.Fatal("session not done after hangup")
	}
}

// Closing a session whose reader waits for output stops the reader and
// leaves no fd behind (the pty's copy and its epoll instance); the
// other sessions carry on.
func TestWaiterCloseWhileWaiting(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	b, bsl := rawPty(t, h, "b")
	defer bsl.Close()
	before := openFds(t)
	var sls []*os.File
	var ss []*Session
	for i := range 10 {
		s, sl := rawPty(t, h, fmt.Sprint("a", i))
		sls = append(sls, sl)
		ss = append(ss, s)
	}
	time.Sleep(20 * time.Millisecond) // the readers find nothing and wait
	for _, s := range ss {
		s.Close()
		select {
		case <-s.Done():
		case <-time.After(deadline):
			t.Fatal("reader still running after Close")
		}
	}
	for _, sl := range sls {
		sl.Close()
	}
	if after := openFds(t); after != before {
		t.Fatalf("%d fds open before ten sessions came and went, %d after", before, after)
	}
	c := &collector{v: b.Attach("alice", ModeOwner)}
	bsl.Write([]byte("still here"))
	c.until(t, ctx(t), "still here")
	if !bytes.Equal(c.out.Bytes(), []byte("still here")) {
		t.Fatalf("b saw %q", c.out.String())
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// Small writes that land between a short read and the arming of the
// waiter are not lost: after a short read the reader waits without
// reading again, and the arming must find them. Writers of every pace,
// from back to back to a pause per write, so some land in that gap.
func TestWaiterSmallWritesAfterShortRead(t *testing.T) {
	tests := []struct {
		name  string
		pause time.Duration
	}{{"back to back", 0}, {"with pauses", 20 * time.Microsecond}, {"echo pace", 200 * time.Microsecond}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(Options{})
			defer h.Close()
			s, sl := rawPty(t, h, "small")
			defer sl.Close()
			c := &collector{v: s.Attach("alice", ModeOwner)}
			var want bytes.Buffer
			for i := range 2000 {
				fmt.Fprintf(&want, "%d,", i)
			}
			go func() {
				p := want.Bytes()
				for len(p) > 0 {
					k := min(len(p), 1+len(p)%7)
					sl.Write(p[:k])
					p = p[k:]
					if tt.pause > 0 {
						time.Sleep(tt.pause)
					}
				}
			}()
			c.until(t, ctx(t), "1999,")
			if got := c.out.String(); got != want.String() {
				t.Errorf("got %d bytes, want %d; first difference at %d", len(got), want.Len(), firstDiff(got, want.String()))
			}
		})
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
