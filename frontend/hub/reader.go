package hub

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// runReader reads the pty while it has output and the viewers have room
// for it, on a goroutine of its own that ends when there is nothing to
// do: when the pty says EAGAIN (it is armed in the hub's poller, which
// starts the reader again once it is readable) or when the viewers'
// windows are full (an acknowledgement, a viewer leaving, or the stall
// clock's timer starts it again). An idle session has no goroutine here.
// Inline, it runs on the poller's goroutine, and the end of the stream
// (finish, which may call OnExit) goes to a goroutine of its own.
func (s *Session) runReader(inline bool) {
	for {
		select {
		case <-s.closing:
			s.setErr(os.ErrClosed)
			s.endStream(inline)
			return
		default:
		}
		s.mu.Lock()
		n, wait := s.allowanceLocked(time.Now())
		s.mu.Unlock()
		if n == 0 {
			if wait > 0 {
				s.rdMu.Lock()
				if s.rdTimer == nil {
					s.rdTimer = time.AfterFunc(wait, s.kickReader)
				} else {
					s.rdTimer.Reset(wait)
				}
				s.rdMu.Unlock()
			}
			if s.parkReader(false) {
				return
			}
			continue
		}
		again, err := s.readOnce(n)
		if err != nil {
			s.setErr(err)
			s.endStream(inline)
			return
		}
		if again {
			continue
		}
		// Waiting for output needs no kick: acknowledgements only
		// widen an allowance that is already there. Arming checks
		// readiness, so output that came after the last read (even a
		// short one, after which no read looked for more) wakes it.
		s.rdMu.Lock()
		s.rdArmed = true
		s.rdMu.Unlock()
		if err := s.poll.arm(s.fd); err != nil {
			select {
			case <-s.closing:
				err = os.ErrClosed
			default:
				err = fmt.Errorf("hub: %s: %w", s.id, err)
			}
			s.setErr(err)
			s.endStream(inline)
			return
		}
		if s.parkReader(true) {
			return
		}
	}
}

func (s *Session) endStream(inline bool) {
	if inline {
		go s.finish()
		return
	}
	s.finish()
}

// parkReader ends the reader's goroutine unless it was woken while it
// ran, and says which; armed says it waits for the poller, where kicks
// are of no use.
func (s *Session) parkReader(armed bool) bool {
	s.rdMu.Lock()
	defer s.rdMu.Unlock()
	if s.rdAgain {
		s.rdAgain = false
		s.rdArmed = false
		return false
	}
	s.rdArmed = armed
	s.rdRunning = false
	return true
}

// wakeReader runs the reader, or has it go round once more if it is
// running. A kick (polled false) does nothing while the reader waits for
// output: only the pty being readable, or the session closing, ends
// that wait. inline runs the reader on the caller's goroutine (the
// poller's), which it does not block.
func (s *Session) wakeReader(polled, inline bool) {
	s.rdMu.Lock()
	if !polled && s.rdArmed {
		select {
		case <-s.closing:
		default:
			s.rdMu.Unlock()
			return
		}
	}
	s.rdArmed = false
	if s.rdRunning {
		s.rdAgain = true
		s.rdMu.Unlock()
		return
	}
	s.rdRunning = true
	s.rdMu.Unlock()
	if inline {
		s.runReader(true)
		return
	}
	go s.runReader(false)
}

func (s *Session) setErr(err error) {
	s.mu.Lock()
	if s.readErr == nil {
		s.readErr = err
	}
	s.mu.Unlock()
}

// burstRead is the least a pty read returns while its shell is writing
// faster than it is read.
const burstRead = 2 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// readOnce appends one read of at most n bytes to the ring, and reports
// whether to read again before waiting: not when the pty had nothing
// (EAGAIN), nor when all it had was one short read, as a keystroke's
// echo: that costs no read that finds the pty empty (the poller, arming,
// sees output that came since). After a burst it reads again: a shell
// writing fast has more by then more often than not, and finding it so
// is cheaper than waiting for it. The buffer comes from a pool and goes
// back before it returns, so an idle session holds none.
func (s *Session) readOnce(n int) (bool, error) {
	var rerr error
	again := false
	err := s.rc.Control(func(fd uintptr) {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf := (*bp)[:min(n, len(*bp))]
		// A pty hands out at most its line discipline's buffer (4 KiB)
		// per read; reading on while there is more makes a burst one
		// ring write and one frame per viewer instead of one per 4 KiB.
		// A short read means the shell is not writing fast, so an echo
		// goes out without waiting for another read's EAGAIN.
		k, m := 0, burstRead
		empty := false // a read found nothing (EAGAIN)
		for k < len(buf) && m >= burstRead && rerr == nil {
			var err error
			m, err = unix.Read(int(fd), buf[k:])
			switch {
			case err == unix.EINTR:
				m = burstRead
				continue
			case err == unix.EAGAIN:
				if k == 0 {
					return
				}
				empty = true
			case err == unix.EIO || (err == nil && m == 0):
				// EIO: no slave fd is open any more; the shell is gone and
				// everything it wrote has been read.
				rerr = io.EOF
			case err != nil:
				rerr = fmt.Errorf("hub: read %s: %w", s.id, err)
			}
			if err != nil || m == 0 {
				break
			}
			k += m
		}
		again = !empty && (k == len(buf) || k >= burstRead)
		if k > 0 {
			s.mu.Lock()
			s.ring.write(buf[:k])
			s.ready = s.wakeViewersLocked(s.ready[:0], false)
			s.mu.Unlock()
		}
	})
	notify(s.ready)
	clear(s.ready) // no viewer kept alive by the scratch list
	s.ready = s.ready[:0]
	if err != nil {
		return false, err
	}
	return again, rerr
}

// allowanceLocked is how many bytes the reader may read now: as much as
// the fullest pacing window has room for. When that is nothing and a
// stall clock runs, wait is when to look again at the viewers holding it
// back.
//
// A full viewer holds back the others only while one of them has room:
// the reader would read for it. Only then does its stall clock run. A
// viewer that is alone, or as far behind as the others, is flow control
// doing its job (the shell waits for the pages), not a stall, however
// slow the pages are: under load every page is slow, and cutting one off
// would lose its bytes for nothing.
func (s *Session) allowanceLocked(now time.Time) (n int, wait time.Duration) {
	n = s.opt.ReadChunk
	roomy := false // some pacing viewer would take more now
	for _, v := range s.viewers {
		if v.pacing && !v.lagging && int64(s.opt.Window)-v.backlogLocked() > 0 {
			roomy = true
			break
		}
	}
	waiting := -1 // whether the pty has output waiting; -1: not asked yet
	for _, v := range s.viewers {
		if !v.pacing || v.lagging {
			continue
		}
		space := int64(s.opt.Window) - v.backlogLocked()
		if space > 0 {
			n = min(n, int(space))
			continue
		}
		n = 0
		if !roomy {
			v.heldLocked(now, false) // pauses its clock
			continue
		}
		if waiting < 0 && v.delivered > v.acked {
			waiting = 0
			if s.outputWaiting() {
				waiting = 1
			}
		}
		if v.heldLocked(now, waiting == 1) {
			v.lagging = true
			s.opt.Log.Info("viewer stalled, no longer pacing", "session", s.id, "user", v.user, "held", v.held)
			// It no longer holds the reader back; the others decide.
			return s.allowanceLocked(now)
		}
		wait = s.opt.StallTimeout / stallTicks
	}
	return n, wait
}

// stallTicks is how many times per StallTimeout the reader looks again
// at a viewer holding it back.
const stallTicks = 8

// heldLocked advances v's stall clock, v having filled its window, and
// reports whether it has run out. The clock runs only while v is to
// blame: it has bytes out (sent and not acknowledged; bytes not yet sent
// wait on this process, not on the client), and the pty has output the
// reader would take for another pacing viewer with room (else v holds
// back no one, and the clock pauses). It
// advances by what the reader sees between its looks, at most two ticks
// at a time: a longer gap is time this process did not run, in which an
// acknowledgement may have arrived unread. An acknowledgement resets it.
func (v *Viewer) heldLocked(now time.Time, holding bool) bool {
	if v.delivered == v.acked || !holding {
		v.heldAt = time.Time{}
		return false
	}
	if !v.heldAt.IsZero() {
		v.held += min(now.Sub(v.heldAt), 2*v.s.opt.StallTimeout/stallTicks)
	}
	v.heldAt = now
	return v.held >= v.s.opt.StallTimeout
}

// outputWaiting reports whether the pty has output, or a hangup, for the
// reader.
func (s *Session) outputWaiting() bool {
	ready := true // when unsure, let the clock run
	s.rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(p, 0); err == nil {
			ready = n > 0
		}
	})
	return ready
}

func (s *Session) finish() {
	s.mu.Lock()
	s.exited = true
	ready := s.wakeViewersLocked(nil, false)
	s.mu.Unlock()
	notify(ready)
	s.h.mu.Lock()
	if s.h.sessions[s.id] == s {
		delete(s.h.sessions, s.id)
	}
	s.h.mu.Unlock()
	s.Close()
	close(s.done)
	if s.opt.OnExit != nil {
		s.opt.OnExit(s)
	}
}

// claimReader makes the caller the reader if none runs, and otherwise
// has the running one go round once more.
func (s *Session) claimReader() bool {
	s.rdMu.Lock()
	defer s.rdMu.Unlock()
	if s.rdRunning {
		s.rdAgain = true
		return false
	}
	s.rdRunning, s.rdArmed = true, false
	return true
}

// kickReader has the reader look again at its allowance.
func (s *Session) kickReader() { s.wakeReader(false, false) }

// wakeViewersLocked wakes every viewer waiting in Next and appends the
// ones with a ready func to ready, for the caller to call once it has let
// go of s.mu: a ready func may send, and sending takes s.mu.
func (s *Session) wakeViewersLocked(ready []*Viewer, viewersChanged bool) []*Viewer {
	for _, v := range s.viewers {
		if viewersChanged {
			v.viewersDirty = true
		}
		v.signal()
		if v.ready != nil {
			ready = append(ready, v)
		}
	}
	return ready
}

func notify(vs []*Viewer) {
	for _, v := range vs {
		v.ready()
	}
}
