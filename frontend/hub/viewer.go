package hub

import (
	"context"
	"fmt"
	"time"

	"sluice/internal/termsock"
)

// Viewer is one client's view of a session.
type Viewer struct {
	s      *Session
	user   string
	shared bool   // came through a share token
	epoch  uint32 // that token's share epoch
	// auditor: came through pty-audit-get; always read-only.
	auditor bool
	wake    chan struct{}
	ready   func()

	// Guarded by s.mu.
	mode         string
	pacing       bool
	revoked      bool          // detached by a share change; Poll says so once
	kicked       string        // detached by DetachAll, why; Poll says so once
	policyOut    string        // detached by DetachPolicy, why; Poll says so once
	modeDirty    bool          // mode lowered by a share change; Poll says so once
	pos          int64         // next ring offset to send
	delivered    int64         // bytes handed out by Next
	acked        int64         // bytes the client said it has processed
	held         time.Duration // stall clock: see heldLocked
	heldAt       time.Time     // when the reader last advanced held; zero: not running
	lagging      bool
	detached     bool
	viewersDirty bool
}

func (v *Viewer) Mode() string {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	return v.mode
}
func (v *Viewer) User() string { return v.user }

func (v *Viewer) signal() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// backlogLocked is what this viewer holds up: bytes read but not yet sent
// to it, plus bytes sent but not yet acknowledged.
func (v *Viewer) backlogLocked() int64 {
	return (v.s.ring.head - v.pos) + (v.delivered - v.acked)
}

func (v *Viewer) notify() {
	v.signal()
	if v.ready != nil {
		v.ready()
	}
}

// Event is what Next hands the sender.
type Event struct {
	N       int   // bytes of output copied into dst
	Skipped int64 // bytes this viewer missed because it lagged (before the N)
	Viewers bool  // the viewer list changed
	Exited  bool  // the pty ended and every byte has been handed out
	// Mode is the viewer's new mode when a share change lowered it.
	Mode string
	// Revoked: a share change detached this viewer; nothing follows.
	Revoked bool
	// Kicked: DetachAll detached this viewer, for this reason; nothing
	// follows.
	Kicked string
	// Detached: DetachPolicy detached this viewer, for this reason;
	// nothing follows. Unlike Kicked, the viewer stays signed in.
	Detached string
}

// Next waits for something to send: output within the window, a viewer
// list change, or the end of the session.
func (v *Viewer) Next(ctx context.Context, dst []byte) (Event, error) {
	for {
		ev, err := v.Poll(dst)
		if err != nil || ev.N > 0 || ev.Skipped > 0 || ev.Viewers || ev.Exited || ev.Mode != "" || ev.Revoked || ev.Kicked != "" || ev.Detached != "" {
			return ev, err
		}
		select {
		case <-v.wake:
		case <-ctx.Done():
			return ev, ctx.Err()
		}
	}
}

// Poll is Next without the wait: a zero Event when there is nothing.
func (v *Viewer) Poll(dst []byte) (Event, error) {
	var ev Event
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.revoked {
		v.revoked = false
		ev.Revoked = true
		return ev, nil
	}
	if v.kicked != "" {
		ev.Kicked, v.kicked = v.kicked, ""
		return ev, nil
	}
	if v.policyOut != "" {
		ev.Detached, v.policyOut = v.policyOut, ""
		return ev, nil
	}
	if v.detached {
		return ev, ErrDetached
	}
	if v.modeDirty {
		v.modeDirty = false
		ev.Mode = v.mode
	}
	if v.viewersDirty {
		v.viewersDirty = false
		ev.Viewers = true
	}
	if start := s.ring.start(); v.pos < start {
		ev.Skipped = start - v.pos
		v.pos = start
	}
	avail := s.ring.head - v.pos
	win := int64(s.opt.Window) - (v.delivered - v.acked)
	if avail > 0 && win > 0 && len(dst) > 0 {
		k := int(min(int64(len(dst)), avail, win))
		s.ring.read(v.pos, dst[:k])
		v.pos += int64(k)
		v.delivered += int64(k)
		ev.N = k
	} else if avail == 0 && s.exited {
		ev.Exited = true
	}
	return ev, nil
}

// Ready says whether Poll has something to return, so a sender can take a
// buffer only then, and how many bytes of output Poll would hand out now
// given room enough.
func (v *Viewer) Ready() (ok bool, n int) {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	start := max(v.pos, s.ring.start())
	win := int64(s.opt.Window) - (v.delivered - v.acked)
	n = int(max(0, min(s.ring.head-start, win)))
	ok = n > 0 || v.detached || v.viewersDirty || v.modeDirty || v.pos < s.ring.start() ||
		(s.ring.head == v.pos && s.exited)
	return ok, n
}

// Ack records that the client has processed total bytes (cumulative since
// Attach, not counting skipped ones).
func (v *Viewer) Ack(total int64) {
	s := v.s
	s.mu.Lock()
	if total > v.acked {
		v.acked = min(total, v.delivered)
		v.held, v.heldAt = 0, time.Time{}
	}
	if v.lagging && v.pacing && v.backlogLocked() <= int64(s.opt.Window)/2 {
		v.lagging = false
	}
	s.mu.Unlock()
	v.notify()
	s.kickReader()
}

// Input types p into the session, if the viewer may: its mode is read
// under the lock a share change takes, so once Share has returned no
// keystroke of a viewer it lowered reaches the pty.
func (v *Viewer) Input(p []byte) error {
	if err := v.mayType(); err != nil {
		return err
	}
	return v.s.input(p)
}

func (v *Viewer) mayType() error {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case v.detached && v.shared && s.share.cap(v.epoch, ModeReadWrite) == "":
		return ErrRevoked
	case v.detached:
		return ErrDetached
	case v.mode == ModeReadOnly:
		return ErrReadOnly
	}
	return nil
}

// Resize sets the pty's window size; read-only viewers may not.
func (v *Viewer) Resize(cols, rows uint16) error {
	if err := v.mayType(); err != nil {
		return err
	}
	// Beyond MaxSide no frame reader takes it (the recorder, a fleet
	// relay): the frame would end the whole stream for one bad message.
	if cols == 0 || rows == 0 || cols > termsock.MaxSide || rows > termsock.MaxSide {
		return fmt.Errorf("hub: resize %s: %dx%d", v.s.id, cols, rows)
	}
	var ierr error
	var b []byte
	if err := v.s.rc.Control(func(fd uintptr) {
		b, ierr = v.s.term.resize(int(fd), cols, rows)
	}); err != nil {
		return fmt.Errorf("hub: resize %s: %w", v.s.id, err)
	}
	if ierr != nil {
		return fmt.Errorf("hub: resize %s: %w", v.s.id, ierr)
	}
	if len(b) > 0 {
		return v.s.write(b)
	}
	return nil
}

// Detach removes the viewer; a pending Next returns ErrDetached.
func (v *Viewer) Detach() {
	s := v.s
	var others []*Viewer
	s.mu.Lock()
	if !v.detached {
		v.detached = true
		for i, o := range s.viewers {
			if o == v {
				s.viewers = append(s.viewers[:i], s.viewers[i+1:]...)
				break
			}
		}
		others = s.wakeViewersLocked(nil, true)
	}
	s.mu.Unlock()
	notify(others)
	v.notify()
	s.kickReader()
}
