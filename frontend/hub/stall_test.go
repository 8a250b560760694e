package hub

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"
)

func lagging(s *Session, user string) bool {
	for _, vi := range s.Viewers() {
		if vi.User == user {
			return vi.Lagging
		}
	}
	return false
}

// The stall clock runs only while the viewer is to blame. These waits are
// not speed assertions: whatever the machine's speed, a viewer with
// nothing sent, or holding back a pty with nothing to read, never lags.
func TestStallClock(t *testing.T) {
	const window, chunk, stall = 16 << 10, 4 << 10, 100 * time.Millisecond
	h := New(Options{Window: window, ReadChunk: chunk, RingMax: 64 << 10, StallTimeout: stall})
	defer h.Close()
	ctx := ctx(t)

	// A viewer idle for longer than the timeout, then filled by a burst its
	// sender has not taken yet, is waiting on this process, not on its
	// client.
	s, sl := rawPty(t, h, "unsent")
	s.Attach("alice", ModeOwner)
	time.Sleep(3 * stall)
	go sl.Write(pattern(4 * window))
	for s.Stats().Head < window {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(3 * stall)
	if lagging(s, "alice") {
		t.Fatal("a viewer whose bytes were never sent lags")
	}
	if head := s.Stats().Head; head > window+chunk {
		t.Fatalf("the reader ran %d bytes ahead of a window of %d", head, window)
	}

	// A viewer sent a whole window that acknowledges none of it holds back
	// no one while the pty has nothing more.
	s, sl = rawPty(t, h, "quiet")
	alice := &collector{v: s.Attach("alice", ModeOwner)}
	c := &collector{v: s.Attach("bob", ModeOwner), noAck: true}
	go sl.Write(pattern(window))
	for c.total < window {
		if err := c.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for alice.total < window {
		if err := alice.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * stall)
	if lagging(s, "bob") {
		t.Fatal("a viewer holding back a quiet pty lags")
	}
	// Once there is output it holds back from alice, it lags after the
	// timeout.
	sl.Write([]byte("x"))
	for !lagging(s, "bob") {
		if ctx.Err() != nil {
			t.Fatal("a viewer holding back output never lagged")
		}
		time.Sleep(time.Millisecond)
	}
	// Acknowledging catches it up.
	c.v.Ack(c.total)
	if lagging(s, "bob") {
		t.Fatal("still lagging with everything acknowledged")
	}

	// A viewer alone, or as far behind as every other pacing viewer, is
	// flow control: the shell waits for it, for as long as it takes, and
	// it loses nothing.
	for _, others := range []int{0, 1} {
		s, sl = rawPty(t, h, fmt.Sprint("slow", others))
		var cs []*collector
		for i := range 1 + others {
			cs = append(cs, &collector{v: s.Attach(fmt.Sprint("page", i), ModeOwner), noAck: true})
		}
		data := pattern(4 * window)
		go sl.Write(data)
		for _, c := range cs {
			for c.total < window {
				if err := c.step(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(5 * stall)
		for i := range cs {
			if lagging(s, fmt.Sprint("page", i)) {
				t.Fatalf("with %d other pages as slow, page %d lags", others, i)
			}
		}
		for _, c := range cs {
			c.noAck = false
			c.v.Ack(c.total)
		}
		// Pages read at once, as their senders push.
		errs := make(chan error, len(cs))
		for _, c := range cs {
			go func() {
				for c.total < int64(len(data)) {
					if err := c.step(ctx); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range cs {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range cs {
			if c.skipped != 0 || !bytes.Equal(c.out.Bytes(), data) {
				t.Fatalf("with %d other pages as slow: skipped %d, bytes equal %v", others, c.skipped, bytes.Equal(c.out.Bytes(), data))
			}
		}
	}
}

// heldLocked's clock, looked at with made-up times: it advances while the
// viewer has bytes out and the pty has output waiting, pauses otherwise,
// and counts a gap in the reader's looks (this process not running) as
// two ticks at most.
func TestHeldClock(t *testing.T) {
	const stall = 2 * time.Second
	tick := stall / stallTicks
	type look struct {
		at      time.Duration
		waiting bool // output waiting in the pty
		stalled bool // what heldLocked must say
	}
	// ticks are looks a tick apart from from, the last one stalled.
	ticks := func(from time.Duration, n int, waiting, lastStalled bool) []look {
		var ls []look
		for k := range n {
			ls = append(ls, look{from + time.Duration(k)*tick, waiting, lastStalled && k == n-1})
		}
		return ls
	}
	cat := func(lss ...[]look) []look { return slices.Concat(lss...) }
	tests := []struct {
		name  string
		out   int64 // bytes sent and not acknowledged
		looks []look
	}{
		{"nothing sent", 0, ticks(0, 3*stallTicks, true, false)},
		// held reaches the timeout on the 8th tick after the first look.
		{"steady looks", 1, ticks(0, stallTicks+1, true, true)},
		// 10 s unseen count 2 ticks; 6 more reach it.
		{"process did not run", 1, cat(ticks(0, 1, true, false), ticks(10*stall, 7, true, true))},
		// 4 ticks held, paused while quiet (however long), 4 more.
		{"pty quiet: paused", 1, cat(ticks(0, 5, true, false), ticks(5*tick, 3, false, false),
			ticks(10*stall, 5, true, true))},
	}
	t0 := time.Unix(1e9, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &Viewer{s: &Session{opt: Options{StallTimeout: stall}}, delivered: tt.out}
			for _, l := range tt.looks {
				if got := v.heldLocked(t0.Add(l.at), l.waiting); got != l.stalled {
					t.Fatalf("at %v (output waiting %v): stalled %v, want %v (held %v)", l.at, l.waiting, got, l.stalled, v.held)
				}
			}
		})
	}
}
