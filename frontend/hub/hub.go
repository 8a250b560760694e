// Package hub streams live pty sessions to their viewers. Each session has
// exactly one reader of its pty master, which appends to the session's
// scrollback ring; every viewer sends from the ring at its own position,
// within a window of bytes its client has not yet acknowledged.
//
// Flow control: the reader reads only as much as every pacing viewer (the
// ones that may type) has room for in its window, so a browser that falls
// behind stops the pty reads and the shell blocks on its output, instead of
// the frontend buffering without bound. A pacing viewer that holds the
// reader back from another pacing viewer for StallTimeout without
// acknowledging anything stops pacing: it lags, and when the ring has
// moved past it, skips ahead. That clock runs only while the viewer is to
// blame (see allowanceLocked and heldLocked).
// Read-only viewers never pace; they only ever skip. Memory per session is
// the ring (at most RingMax, grown as output arrives) plus at most InputMax
// of queued keystrokes.
package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Viewer modes. They match msg.ModeOwner, msg.ShareReadOnly and
// msg.ShareReadWrite.
const (
	ModeOwner     = "owner"
	ModeReadOnly  = "read-only"
	ModeReadWrite = "read-write"
	// ModePrivate is a sharing mode (msg.SharePrivate), never a viewer's.
	ModePrivate = "private"
)

var (
	ErrReadOnly  = errors.New("hub: this viewer is read-only")
	ErrInputFull = errors.New("hub: input backlog full, the shell is not reading")
	ErrDetached  = errors.New("hub: viewer detached")
	// ErrRevoked is a share viewer's attach or input after the owner
	// stopped sharing.
	ErrRevoked = errors.New("hub: the owner stopped sharing this session")
)

// Options bound a session's memory and pacing. Zero values take defaults.
type Options struct {
	Window       int           // unacknowledged bytes per viewer; default 64 KiB
	RingMax      int           // scrollback per session; default 256 KiB
	ReadChunk    int           // most read from the pty at a time; default 32 KiB
	InputMax     int           // queued input per session; default 64 KiB
	StallTimeout time.Duration // pacing viewer holding another back this long stops pacing; default 5 s
	Log          *slog.Logger
	// OnExit, if set, is called once after a session's pty has ended and
	// the session has left the hub.
	OnExit func(s *Session)
}

func (o Options) withDefaults() Options {
	if o.Window <= 0 {
		o.Window = 64 << 10
	}
	if o.RingMax <= 0 {
		o.RingMax = 256 << 10
	}
	if o.ReadChunk <= 0 {
		// A pty gives 4 KiB per read; the reader reads on while there is
		// more, up to this, so a burst goes out in frames this big: fewer
		// frames, acks and wake-ups per byte.
		o.ReadChunk = 32 << 10
	}
	// A pacing viewer must never be overrun by the ring: it can be behind
	// by at most a window plus one read.
	o.RingMax = max(o.RingMax, o.Window+o.ReadChunk)
	if o.InputMax <= 0 {
		o.InputMax = 64 << 10
	}
	if o.StallTimeout <= 0 {
		// Longer than a live page under load goes between two
		// acknowledgements (tests/load's 400 pages of 200 flooding shells
		// on two cores had live pages cut at 2 s, none at 5 s), short
		// enough that a frozen tab holds its sibling pages back briefly,
		// once.
		o.StallTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// Hub is the set of sessions this process is streaming, by session ID.
type Hub struct {
	opt Options

	mu       sync.Mutex
	sessions map[string]*Session
}

func New(opt Options) *Hub {
	return &Hub{opt: opt.withDefaults(), sessions: map[string]*Session{}}
}

// Adopt starts streaming pty, a pty master, as session id, and takes
// ownership of it. If the hub already streams id, pty is closed and the
// existing session returned: there is one reader per pty.
func (h *Hub) Adopt(id string, pty *os.File) (*Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.sessions[id]; ok {
		pty.Close()
		return s, nil
	}
	f, fd, err := nonblocking(pty)
	if err != nil {
		return nil, fmt.Errorf("hub: adopt %s: %w", id, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hub: adopt %s: %w", id, err)
	}
	rw, err := newWaiter(fd, unix.EPOLLIN)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hub: adopt %s: %w", id, err)
	}
	s := &Session{
		id:      id,
		h:       h,
		opt:     h.opt,
		f:       f,
		rc:      rc,
		fd:      fd,
		rw:      rw,
		term:    terminalOf(fd),
		ring:    ring{max: h.opt.RingMax},
		kick:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.active.Store(time.Now().UnixNano())
	h.sessions[id] = s
	go s.readLoop()
	return s, nil
}

// nonblocking returns a non-blocking dup of f that is not in the
// runtime's poller (a waiter of its own watches it), with its
// fd number, and closes f.
func nonblocking(f *os.File) (*os.File, int, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, -1, err
	}
	if derr != nil {
		return nil, -1, fmt.Errorf("dup: %w", derr)
	}
	// os.NewFile puts a non-blocking fd in the runtime's poller, so it
	// must see this one blocking (the flag belongs to the open file, which
	// a previous frontend may have left non-blocking), and O_NONBLOCK is
	// set after.
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return nil, -1, fmt.Errorf("blocking: %w", err)
	}
	nf := os.NewFile(uintptr(nfd), "pty")
	if err := unix.SetNonblock(nfd, true); err != nil {
		nf.Close()
		return nil, -1, fmt.Errorf("nonblock: %w", err)
	}
	return nf, nfd, nil
}

// Window is the per-viewer window in bytes; clients acknowledge in parts
// of it.
func (h *Hub) Window() int { return h.opt.Window }

// Get returns the session streaming id, or nil.
func (h *Hub) Get(id string) *Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[id]
}

// Len is the number of live sessions.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// Close ends every session's stream (not the shells: ptystore holds
// their ptys) and waits for the readers to stop.
func (h *Hub) Close() {
	h.mu.Lock()
	all := make([]*Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.Close()
		<-s.done
	}
}

// Session is one pty being streamed.
type Session struct {
	id  string
	h   *Hub
	opt Options
	f   *os.File // non-blocking, not in the runtime's poller
	rc  syscall.RawConn
	fd  int     // f's, for its waiters; valid until f is closed
	rw  *waiter // the reader's

	term terminal // a pty master or a recorded session's socket (term.go)

	mu      sync.Mutex
	ring    ring
	viewers []*Viewer
	exited  bool
	readErr error
	share   shareState

	kick      chan struct{} // wakes the reader to re-check its allowance
	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed when the reader has stopped

	inMu      sync.Mutex
	inq       [][]byte
	inBytes   int
	inWriting bool
	inWait    *waiter // the input writer's, while it has a backlog
	inClosed  bool

	ready []*Viewer // the reader's scratch list of viewers to notify

	active atomic.Int64 // unix ns of the last input or join: see idle.go
}

func (s *Session) ID() string { return s.id }

// Done is closed once the pty has ended (or the stream was closed) and
// every byte read from it is in the ring.
func (s *Session) Done() <-chan struct{} { return s.done }

// Close stops streaming: the reader stops and the frontend's copy of the
// pty is closed.
func (s *Session) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.rw.close()
		s.inMu.Lock()
		s.inClosed = true
		s.dropInWaitLocked()
		s.inMu.Unlock()
		// Waiters go before f: their epoll instances hold f's fd
		// number.
		s.f.Close()
	})
}

// Err is why the stream ended: nil while live, io.EOF when the shell side
// hung up.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readErr
}

// Stats is a snapshot for tests, benchmarks and the sessions page.
type Stats struct {
	Head      int64 // bytes read from the pty so far
	RingBytes int   // bytes allocated for scrollback
	Viewers   int
}

func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Head: s.ring.head, RingBytes: s.ring.size(), Viewers: len(s.viewers)}
}

func (s *Session) readLoop() {
	defer s.finish()
	var timer *time.Timer
	for {
		s.mu.Lock()
		n, wait := s.allowanceLocked(time.Now())
		s.mu.Unlock()
		if n == 0 {
			var tc <-chan time.Time
			if wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				tc = timer.C
			}
			select {
			case <-s.kick:
			case <-tc:
			case <-s.closing:
				s.setErr(os.ErrClosed)
				return
			}
			if timer != nil {
				timer.Stop()
			}
			continue
		}
		got, err := s.readOnce(n)
		if err != nil {
			s.setErr(err)
			return
		}
		if got {
			continue
		}
		// Waiting for output needs no kick: acknowledgements only
		// widen an allowance that is already there.
		if err := s.rw.wait(); err != nil {
			select {
			case <-s.closing:
				err = os.ErrClosed
			default:
				err = fmt.Errorf("hub: %s: %w", s.id, err)
			}
			s.setErr(err)
			return
		}
	}
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
// false when the pty has nothing (EAGAIN). The buffer comes from a pool
// and goes back before it returns, so an idle session holds none.
func (s *Session) readOnce(n int) (bool, error) {
	var rerr error
	got := false
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
		got = true
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
	return got, rerr
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

func (s *Session) kickReader() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

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

// ViewerInfo describes a viewer for the "who is watching" list.
type ViewerInfo struct {
	User    string `json:"user"`
	Mode    string `json:"mode"`
	Lagging bool   `json:"lagging,omitempty"`
	// Auditor: watching as an auditor the policy names, not through the
	// owner's share; the owner's page says so.
	Auditor bool `json:"auditor,omitempty"`
}

func (s *Session) Viewers() []ViewerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ViewerInfo, 0, len(s.viewers))
	for _, v := range s.viewers {
		out = append(out, ViewerInfo{User: v.user, Mode: v.mode, Lagging: v.lagging, Auditor: v.auditor})
	}
	return out
}

// Attach adds a viewer that will first get the scrollback, then live
// output. Viewers that may type pace the reader; read-only ones do not.
func (s *Session) Attach(user, mode string) *Viewer { return s.AttachFunc(user, mode, nil) }

// AttachFunc is Attach for a viewer that is told rather than waits: ready
// is called (never with a lock of the hub's held, possibly on the pty
// reader's goroutine, so it must not block) whenever Poll may have
// something new. It lets a sender exist only while there is output, and
// lets an idle viewer's output go out without a hand-off to another
// goroutine.
func (s *Session) AttachFunc(user, mode string, ready func()) *Viewer {
	v, _ := s.Join(Join{User: user, Mode: mode}, ready)
	return v
}

// Join describes a viewer: who, in which mode, and whether through a
// share token (and that token's share epoch, from ptystore).
type Join struct {
	User   string
	Mode   string
	Shared bool
	Epoch  uint32
	// Auditor joins read-only whatever Mode says, and is listed as one.
	Auditor bool
}

// Join is AttachFunc for any viewer. One who came through a share token
// gets the mode that share changes since its token's epoch leave it
// (ErrRevoked if the session went private since), and starts where that
// share starts (see Share); anyone else starts at the scrollback.
func (s *Session) Join(j Join, ready func()) (*Viewer, error) {
	v := &Viewer{
		s:       s,
		user:    j.User,
		shared:  j.Shared,
		epoch:   j.Epoch,
		auditor: j.Auditor,
		wake:    make(chan struct{}, 1),
		ready:   ready,
	}
	s.mu.Lock()
	mode := j.Mode
	if j.Auditor {
		mode = ModeReadOnly
	}
	v.pos = s.ring.start()
	if j.Shared {
		mode = s.share.cap(j.Epoch, mode)
		if mode == "" {
			s.mu.Unlock()
			return nil, ErrRevoked
		}
		v.pos = max(v.pos, s.share.from(j.Epoch, s.ring.head))
	}
	v.mode, v.pacing = mode, mode != ModeReadOnly
	s.viewers = append(s.viewers, v)
	s.active.Store(time.Now().UnixNano())
	others := s.wakeViewersLocked(nil, true)
	s.mu.Unlock()
	notify(others)
	s.kickReader()
	return v, nil
}

// shareState is what the hub knows of the session's share changes, by
// ptystore's share epoch (bumped by each change of mode; a token names
// the epoch it was made at). Changes may be applied out of order (two
// tabs of the owner), so it keeps the latest epoch of each kind rather
// than a sequence.
type shareState struct {
	known      bool   // a change has been applied since the hub took the session
	epoch      uint32 // the latest epoch applied
	privateAt  uint32 // the latest epoch at which sharing was set private
	readOnlyAt uint32 // the latest epoch at which it was set read-only
	start      int64  // ring offset where the latest epoch's viewers start
}

// cap is the mode a viewer with a token of epoch e and mode may have
// now: none ("") when the session went private after e, read-only when it
// went read-only after e. A share never gives an attached viewer more
// than its token did.
func (st *shareState) cap(e uint32, mode string) string {
	switch {
	case st.privateAt > e:
		return ""
	case st.readOnlyAt > e:
		return ModeReadOnly
	}
	return mode
}

// from is where a viewer joining with a token of epoch e starts. Without
// a change applied, every byte in the ring came after the share (the hub
// took the session after it); a token of an epoch the hub has not applied
// yet, or an older one, gets nothing from before.
func (st *shareState) from(e uint32, head int64) int64 {
	switch {
	case !st.known:
		return 0
	case e == st.epoch:
		return st.start
	}
	return head
}

// Share applies a change of the session's sharing that ptystore has made
// (epoch is its share epoch after the change). Viewers who came through a
// token of an earlier epoch are detached when mode is private (their next
// Poll says why), and can no longer type when it is read-only; nobody's
// mode is raised. Viewers joining with a token of this epoch see the
// scrollback only when history is set, otherwise only output from now on.
func (s *Session) Share(epoch uint32, mode string, history bool) {
	s.mu.Lock()
	st := &s.share
	switch mode {
	case ModePrivate:
		st.privateAt = max(st.privateAt, epoch)
	case ModeReadOnly:
		st.readOnlyAt = max(st.readOnlyAt, epoch)
	}
	if !st.known || epoch >= st.epoch {
		st.known, st.epoch = true, epoch
		st.start = s.ring.head
		if history {
			st.start = 0
		}
	}
	var changed []*Viewer
	kept := s.viewers[:0]
	for _, v := range s.viewers {
		if !v.shared {
			kept = append(kept, v)
			continue
		}
		switch m := st.cap(v.epoch, v.mode); {
		case m == "":
			v.detached, v.revoked = true, true
			changed = append(changed, v)
			continue
		case m != v.mode:
			v.mode, v.pacing, v.lagging, v.modeDirty = m, false, false, true
			changed = append(changed, v)
		}
		kept = append(kept, v)
	}
	clear(s.viewers[len(kept):])
	s.viewers = kept
	var others []*Viewer
	if len(changed) > 0 {
		others = s.wakeViewersLocked(nil, true)
	}
	s.mu.Unlock()
	notify(others)
	for _, v := range changed {
		if v.detached {
			v.notify()
		}
	}
	if len(changed) > 0 {
		s.kickReader()
	}
}

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
	if cols == 0 || rows == 0 {
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

// input writes p to the pty without ever blocking the caller (the
// connection's reader, which must keep reading acknowledgements): what the
// pty does not take now is queued, up to InputMax, and written by a
// goroutine that exists only while there is a backlog.
func (s *Session) input(p []byte) error {
	s.active.Store(time.Now().UnixNano())
	return s.write(s.term.frame(p))
}

func (s *Session) write(p []byte) error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if len(s.inq) == 0 {
		var n int
		var werr error
		if err := s.rc.Control(func(fd uintptr) {
			n, werr = unix.Write(int(fd), p)
		}); err != nil {
			return fmt.Errorf("hub: write %s: %w", s.id, err)
		}
		if werr != nil && werr != unix.EAGAIN && werr != unix.EINTR {
			return fmt.Errorf("hub: write %s: %w", s.id, werr)
		}
		p = p[max(n, 0):]
		if len(p) == 0 {
			return nil
		}
	}
	if s.inBytes+len(p) > s.opt.InputMax {
		return ErrInputFull
	}
	s.inq = append(s.inq, append([]byte(nil), p...))
	s.inBytes += len(p)
	if !s.inWriting {
		s.inWriting = true
		go s.drainInput()
	}
	return nil
}

// awaitWritable waits until the pty may take input again, or the
// session closes. The waiter is made on the first wait of a backlog and
// closed when the backlog is gone.
func (s *Session) awaitWritable() error {
	s.inMu.Lock()
	if s.inClosed {
		s.inMu.Unlock()
		return os.ErrClosed
	}
	if s.inWait == nil {
		w, err := newWaiter(s.fd, unix.EPOLLOUT)
		if err != nil {
			s.inMu.Unlock()
			return err
		}
		s.inWait = w
	}
	w := s.inWait
	s.inMu.Unlock()
	return w.wait()
}

func (s *Session) drainInput() {
	for {
		s.inMu.Lock()
		if len(s.inq) == 0 {
			s.inWriting = false
			s.dropInWaitLocked()
			s.inMu.Unlock()
			return
		}
		b := s.inq[0]
		s.inMu.Unlock()
		var n int
		var werr error
		err := s.rc.Control(func(fd uintptr) {
			n, werr = unix.Write(int(fd), b)
		})
		if err == nil && (werr == unix.EAGAIN || werr == unix.EINTR) {
			if werr == unix.EAGAIN {
				err = s.awaitWritable()
			}
			n, werr = 0, nil
		}
		s.inMu.Lock()
		if err != nil || werr != nil {
			s.inq, s.inBytes, s.inWriting = nil, 0, false
			s.dropInWaitLocked()
			s.inMu.Unlock()
			return
		}
		if n == len(b) {
			s.inq = s.inq[1:]
		} else {
			s.inq[0] = b[n:]
		}
		s.inBytes -= n
		s.inMu.Unlock()
	}
}

func (s *Session) dropInWaitLocked() {
	if s.inWait != nil {
		s.inWait.close()
		s.inWait = nil
	}
}
