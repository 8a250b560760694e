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
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
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
	poll     *poller // every session's pty; made by the first Adopt
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
	if h.poll == nil {
		if h.poll, err = newPoller(); err != nil {
			f.Close()
			return nil, fmt.Errorf("hub: adopt %s: %w", id, err)
		}
	}
	s := &Session{
		id:      id,
		h:       h,
		opt:     h.opt,
		f:       f,
		rc:      rc,
		fd:      fd,
		poll:    h.poll,
		term:    terminalOf(fd),
		ring:    ring{max: h.opt.RingMax},
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := h.poll.add(fd, func(inline bool) { s.wakeReader(true, inline) }); err != nil {
		f.Close()
		return nil, fmt.Errorf("hub: adopt %s: %w", id, err)
	}
	s.active.Store(time.Now().UnixNano())
	h.sessions[id] = s
	s.wakeReader(true, false)
	return s, nil
}

// nonblocking returns a non-blocking dup of f that is not in the
// runtime's poller (the hub's poller watches it), with its
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
	h.mu.Lock()
	p := h.poll
	if len(h.sessions) == 0 {
		h.poll = nil
	} else {
		p = nil // adopted meanwhile: they keep it
	}
	h.mu.Unlock()
	if p != nil {
		p.close()
	}
}
