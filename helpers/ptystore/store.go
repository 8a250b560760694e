package ptystore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sluice/msg"
	"sluice/rpc"
)

// Errors of the store; the handler maps them to rpc codes.
var (
	ErrNotFound = errors.New("no such session")
	ErrExists   = errors.New("session id already held")
	ErrFull     = errors.New("session limit reached")
	ErrUserFull = errors.New("per-user session limit reached")
	ErrInvalid  = errors.New("invalid session")
	ErrClosed   = errors.New("store closed")
)

// Notifier sends one sd_notify message with fds, as sdnotify.Notify does.
type Notifier func(state string, fds ...*os.File) error

// Config of a Store.
type Config struct {
	MaxSessions int // sessions held in all; 0: 1024
	MaxPerUser  int // sessions held per owner; 0: 64
	// HangupGrace is how long a master must keep polling POLLHUP before its
	// session counts as ended. A terminal hangup followed by a reopen (as
	// login(1) does with vhangup) hangs the master up for a moment, and
	// that must not end a live session.
	HangupGrace time.Duration
	// Notify reaches the fd store; nil means there is none (development
	// with --listen), and sessions then do not survive a restart.
	Notify Notifier
	Log    *slog.Logger
	// Hangup ends the shell of a session being dropped (the hangup
	// helper, through its socket), given a dup of its master. nil: the
	// store signals the shell itself where it may, and otherwise relies
	// on the last copy of the master being closed (development only:
	// with a frontend holding a copy, the shell then lives on).
	Hangup func(ctx context.Context, master *os.File) error
	// OnDrop, if set, is called after a session is dropped, outside the
	// store's lock, with why: "drop", "shell exited", "bad fd".
	OnDrop func(info msg.SessionInfo, reason string)

	// ViewerLease is how long a report that a session has a viewer holds
	// (see msg.PtyViewers); 0: msg.ViewerLeaseMs.
	ViewerLease time.Duration

	// Recorders is who may have made a recorded session's socket (see
	// sessionFD): the recording helper's uid or group. nil: this
	// process's own uid only, as a helper's allowlist defaults to.
	Recorders *rpc.Allow

	// trace, if set, sees the watcher's steps ("suspect", "rearm") for
	// tests, called under the store's lock.
	trace func(event, id string)
}

type session struct {
	ending  bool // a Drop is hanging it up
	info    msg.SessionInfo
	epoch   uint32 // share epoch; see token.go
	name    string // fd store name
	f       *os.File
	sock    bool      // f is a recorded session's socket, not a pty master (sessionFD)
	serial  uint64    // epoll key; never reused, unlike fd numbers
	suspect time.Time // when a POLLHUP seen on the master is confirmed; zero: none seen
	lim     sessionLimits
	// detached: the policy no longer allows the session and the file
	// says on-revoke detach (see detach.go).
	detached bool
}

// Store holds the sessions. Its methods are safe for concurrent use.
type Store struct {
	cfg       Config
	log       *slog.Logger
	recorders rpc.Allow

	mu       sync.Mutex
	byID     map[string]*session
	bySerial map[uint64]*session
	perUser  map[string]int
	serial   uint64
	closed   bool

	epfd   int
	stopfd int
	done   chan struct{}
}

// stopSerial is the epoll key of the stop eventfd; sessions start at 1.
const stopSerial = 0

// New starts a store and its hangup watcher.
func New(cfg Config) (*Store, error) {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1024
	}
	if cfg.MaxPerUser <= 0 {
		cfg.MaxPerUser = 64
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ViewerLease <= 0 {
		cfg.ViewerLease = msg.ViewerLeaseMs * time.Millisecond
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("ptystore: epoll: %w", err)
	}
	stopfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("ptystore: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stopfd, epollEvent(unix.EPOLLIN, stopSerial)); err != nil {
		unix.Close(epfd)
		unix.Close(stopfd)
		return nil, fmt.Errorf("ptystore: epoll add: %w", err)
	}
	recorders := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	if cfg.Recorders != nil {
		recorders = *cfg.Recorders
	}
	s := &Store{
		cfg: cfg, log: cfg.Log, recorders: recorders,
		byID: map[string]*session{}, bySerial: map[uint64]*session{}, perUser: map[string]int{},
		epfd: epfd, stopfd: stopfd, done: make(chan struct{}),
	}
	go s.watch()
	return s, nil
}

func epollEvent(events uint32, serial uint64) *unix.EpollEvent {
	return &unix.EpollEvent{Events: events, Fd: int32(uint32(serial)), Pad: int32(uint32(serial >> 32))}
}

func eventSerial(ev unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// Close stops the watcher and closes every held fd. The fd store keeps its
// copies: that is what lets sessions survive a restart.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	unix.Write(s.stopfd, one)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, se := range s.byID {
		se.f.Close()
	}
	s.byID, s.bySerial = map[string]*session{}, map[uint64]*session{}
	unix.Close(s.epfd)
	unix.Close(s.stopfd)
}

// Put takes ownership of f, a pty master or a recorded session's socket
// (sessionFD), and holds it for the session.
// The session starts private with share epoch 0; Created is filled in when
// zero. On any error f is closed.
func (s *Store) Put(info msg.SessionInfo, f *os.File) (msg.SessionInfo, error) {
	sock, err := sessionFD(f, s.recorders)
	if err != nil {
		f.Close()
		return info, err
	}
	info.Sharing = msg.SharePrivate
	// ptystore's clock, not the caller's: the maximum length counts from
	// Created, and a frontend that chose it could push it into the future.
	now := time.Now()
	info.Created = now.UnixMilli()
	if err := validInfo(info); err != nil {
		f.Close()
		return info, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	name, err := fdName(info, 0)
	if err != nil {
		f.Close()
		return info, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		err = ErrClosed
	case s.byID[info.ID] != nil:
		err = ErrExists
	case len(s.byID) >= s.cfg.MaxSessions:
		err = fmt.Errorf("%w (%d)", ErrFull, s.cfg.MaxSessions)
	case s.perUser[info.Owner] >= s.cfg.MaxPerUser:
		err = fmt.Errorf("%w (%d)", ErrUserFull, s.cfg.MaxPerUser)
	}
	if err != nil {
		f.Close()
		return info, err
	}
	if err := s.store(name, f); err != nil {
		f.Close()
		return info, err
	}
	// Whoever put it is streaming it.
	if err := s.addLocked(&session{info: info, name: name, f: f, sock: sock, lim: sessionLimits{attached: true, seen: now}}); err != nil {
		s.unstore(name)
		f.Close()
		return info, err
	}
	s.log.Info("ptystore: session stored", "id", info.ID, "owner", info.Owner, "unix_user", info.UnixUser,
		"machine", info.Machine, "pid", info.PID)
	return info, nil
}

// store puts f in the fd store under name. FDPOLL=0 because the store
// must not drop an fd on its own at the first POLLHUP: deciding that a
// session ended is the watcher's job, with its grace period.
func (s *Store) store(name string, f *os.File) error {
	if s.cfg.Notify == nil {
		return nil
	}
	if err := s.cfg.Notify("FDSTORE=1\nFDPOLL=0\nFDNAME="+name, f); err != nil {
		return fmt.Errorf("ptystore: fd store %s: %w", name, err)
	}
	return nil
}

func (s *Store) unstore(name string) {
	if s.cfg.Notify == nil {
		return
	}
	if err := s.cfg.Notify("FDSTOREREMOVE=1\nFDNAME=" + name); err != nil {
		s.log.Error("ptystore: fd store remove failed", "name", name, "err", err)
	}
}

func (s *Store) addLocked(se *session) error {
	s.serial++
	se.serial = s.serial
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, int(se.f.Fd()), epollEvent(unix.EPOLLONESHOT, se.serial)); err != nil {
		return fmt.Errorf("ptystore: watch %s: %w", se.info.ID, err)
	}
	s.byID[se.info.ID] = se
	s.bySerial[se.serial] = se
	s.perUser[se.info.Owner]++
	return nil
}

// removeLocked forgets a session, hangs its shell up when asked, closes
// the fd and takes it out of the fd store.
func (s *Store) removeLocked(se *session, hang bool) {
	delete(s.byID, se.info.ID)
	delete(s.bySerial, se.serial)
	if s.perUser[se.info.Owner]--; s.perUser[se.info.Owner] <= 0 {
		delete(s.perUser, se.info.Owner)
	}
	fd := int(se.f.Fd())
	// Before the close: epoll watches the open file, which others still
	// hold, not our fd, and would go on reporting it.
	unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	if hang && se.sock {
		// The recorder ends the shell's session when it sees this.
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil && !errors.Is(err, unix.ENOTCONN) {
			s.log.Warn("ptystore: shutdown of a recorded session's socket", "id", se.info.ID, "err", err)
		}
	} else if hang {
		if err := hangup(fd); errors.Is(err, unix.EPERM) {
			// The usual case without root or CAP_KILL, not a fault.
			s.log.Info("ptystore: may not signal the session; it hangs up when the last copy of its pty is closed", "id", se.info.ID, "err", err)
		} else if err != nil {
			s.log.Warn("ptystore: hangup incomplete", "id", se.info.ID, "err", err)
		}
	}
	se.f.Close()
	s.unstore(se.name)
}

// Adopt takes the fds handed back by the fd store at start (the activation
// fds named FDNamePrefix...). Anything unreadable or not a pty master is
// closed and removed from the fd store; when one session comes back under
// two names (a crash in the middle of a share change) the later epoch wins.
func (s *Store) Adopt(files []*os.File) {
	byID := map[string]*session{}
	var order []string
	for _, f := range files {
		name := f.Name()
		info, epoch, err := parseFDName(name)
		sock := false
		if err == nil {
			sock, err = sessionFD(f, s.recorders)
		}
		if err != nil {
			s.log.Warn("ptystore: discarding stored fd", "name", name, "err", err)
			f.Close()
			s.unstore(name)
			continue
		}
		// Nobody is known to watch it until the frontend says so, and
		// its limits are unknown until policy is asked (enforce does).
		se := &session{info: info, epoch: epoch, name: name, f: f, sock: sock, lim: sessionLimits{seen: time.Now()}}
		if old := byID[info.ID]; old != nil {
			keep, drop := old, se
			if se.epoch > old.epoch {
				keep, drop = se, old
			}
			drop.f.Close()
			if drop.name != keep.name {
				s.unstore(drop.name)
			}
			byID[info.ID] = keep
			continue
		}
		byID[info.ID] = se
		order = append(order, info.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range order {
		se := byID[id]
		if s.byID[id] != nil {
			se.f.Close()
			continue
		}
		if err := s.addLocked(se); err != nil {
			s.log.Error("ptystore: adopt failed", "id", id, "err", err)
			se.f.Close()
			continue
		}
		s.log.Info("ptystore: adopted session", "id", id, "owner", se.info.Owner, "unix_user", se.info.UnixUser, "machine", se.info.Machine)
	}
}

// Get returns a dup of the session's master and the mode auth grants. auth
// runs under the store's lock, so the mode and epoch it sees are current.
func (s *Store) Get(id string, auth func(info msg.SessionInfo, epoch uint32) (string, error)) (msg.SessionInfo, string, *os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.byID[id]
	if se == nil {
		return msg.SessionInfo{}, "", nil, ErrNotFound
	}
	mode, err := auth(se.info, se.epoch)
	if err != nil {
		return msg.SessionInfo{}, "", nil, err
	}
	f, err := dupFile(se.f, "pty:"+id)
	if err != nil {
		return msg.SessionInfo{}, "", nil, fmt.Errorf("ptystore: get %s: %w", id, err)
	}
	return se.info, mode, f, nil
}

// List returns the sessions keep accepts, oldest first.
func (s *Store) List(keep func(msg.SessionInfo) bool) []msg.SessionInfo {
	s.mu.Lock()
	out := make([]msg.SessionInfo, 0, len(s.byID))
	for _, se := range s.byID {
		if keep == nil || keep(se.info) {
			out = append(out, se.info)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b msg.SessionInfo) int {
		return cmp.Or(cmp.Compare(a.Created, b.Created), strings.Compare(a.ID, b.ID))
	})
	return out
}

// ErrHangup: the session's shell could not be ended; it is still held.
var ErrHangup = errors.New("hangup failed")

// ErrEnding: another Drop of the session is under way.
var ErrEnding = errors.New("session is being ended")

// Drop ends a session when auth allows: has Config.Hangup end its shell's
// whole process tree, and only when that worked, closes the fd and
// removes it from the fd store. A failed hangup leaves the session held
// and listed, so an admin can still see it and try again. The store's
// lock is not held during the hangup, which takes up to its grace period.
func (s *Store) Drop(ctx context.Context, id string, auth func(msg.SessionInfo) error) error {
	return s.drop(ctx, id, auth, "drop")
}

// drop is Drop, logging why the session was ended.
func (s *Store) drop(ctx context.Context, id string, auth func(msg.SessionInfo) error, reason string) error {
	s.mu.Lock()
	se := s.byID[id]
	if se == nil {
		s.mu.Unlock()
		return ErrNotFound
	}
	if auth != nil {
		if err := auth(se.info); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	if s.cfg.Hangup == nil {
		s.removeLocked(se, true)
		s.mu.Unlock()
		s.dropped(se.info, reason)
		return nil
	}
	if se.ending {
		s.mu.Unlock()
		return ErrEnding
	}
	f, err := dupFile(se.f, "pty:"+id)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("ptystore: drop %s: %w", id, err)
	}
	se.ending = true
	s.mu.Unlock()

	var herr error
	if se.sock {
		herr = endSocket(ctx, f)
	} else {
		herr = s.cfg.Hangup(ctx, f)
	}
	f.Close()

	s.mu.Lock()
	se.ending = false
	if herr != nil {
		s.mu.Unlock()
		s.log.Error("ptystore: session not ended", "id", id, "err", herr)
		return fmt.Errorf("%w: %w", ErrHangup, herr)
	}
	// The watcher may have dropped it meanwhile, the shell being gone.
	mine := s.byID[id] == se
	if mine {
		s.removeLocked(se, false)
	}
	s.mu.Unlock()
	if mine {
		s.dropped(se.info, reason)
	}
	return nil
}

// End ends the shell behind f, a session the store did not take, as a
// drop ends a held one: through Config.Hangup (or endSocket for a
// recorded session's socket), and closes f. It is for a put refused after
// its ticket checked out; what went wrong is only logged, the caller
// already has its answer.
func (s *Store) End(ctx context.Context, info msg.SessionInfo, f *os.File) {
	defer f.Close()
	sock, err := sessionFD(f, s.recorders)
	switch {
	case err != nil:
	case sock:
		err = endSocket(ctx, f)
	case s.cfg.Hangup != nil:
		err = s.cfg.Hangup(ctx, f)
	default:
		err = hangup(int(f.Fd()))
	}
	if err != nil {
		s.log.Error("ptystore: refused session not ended", "id", info.ID, "owner", info.Owner, "pid", info.PID, "err", err)
		return
	}
	s.log.Info("ptystore: refused session ended", "id", info.ID, "owner", info.Owner, "pid", info.PID)
}

func (s *Store) dropped(info msg.SessionInfo, reason string) {
	s.log.Info("ptystore: session dropped", "id", info.ID, "owner", info.Owner, "reason", reason)
	if s.cfg.OnDrop != nil {
		s.cfg.OnDrop(info, reason)
	}
}

// Share sets the session's sharing mode when auth allows, and returns the
// session and its share epoch. A change of mode bumps the epoch, which
// revokes every token made before; the fd is re-stored under its new name
// (removed first: the fd store ignores a second copy of an fd it holds, so
// adding the new name first would keep the old one).
func (s *Store) Share(id, mode string, auth func(msg.SessionInfo) error) (msg.SessionInfo, uint32, error) {
	if _, ok := sharingCode(mode); !ok {
		return msg.SessionInfo{}, 0, fmt.Errorf("%w: sharing mode %q", ErrInvalid, mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.byID[id]
	if se == nil {
		return msg.SessionInfo{}, 0, ErrNotFound
	}
	if err := auth(se.info); err != nil {
		return msg.SessionInfo{}, 0, err
	}
	if se.info.Sharing == mode {
		return se.info, se.epoch, nil
	}
	info := se.info
	info.Sharing = mode
	epoch := se.epoch + 1
	name, err := fdName(info, epoch)
	if err != nil {
		return msg.SessionInfo{}, 0, fmt.Errorf("ptystore: share %s: %w", id, err)
	}
	s.unstore(se.name)
	if err := s.store(name, se.f); err != nil {
		// Put the old name back so a restart still finds the session.
		if rerr := s.store(se.name, se.f); rerr != nil {
			s.log.Error("ptystore: session no longer in the fd store", "id", id, "err", rerr)
		}
		return msg.SessionInfo{}, 0, err
	}
	se.info, se.epoch, se.name = info, epoch, name
	s.log.Info("ptystore: sharing changed", "id", id, "owner", info.Owner, "sharing", mode, "epoch", epoch)
	return info, epoch, nil
}

// Len is the number of sessions held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

// watch waits for POLLHUP on held masters. Each master is watched one-shot:
// a hangup marks the session suspect, and only if the master still polls
// POLLHUP after the grace period is the session dropped; otherwise it is
// re-armed. One-shot also keeps a hung-up master from waking us in a loop
// during its grace period.
func (s *Store) watch() {
	defer close(s.done)
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(s.epfd, events, s.nextCheck())
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			s.log.Error("ptystore: hangup watcher stopped", "err", err)
			return
		}
		now := time.Now()
		for _, ev := range events[:n] {
			serial := eventSerial(ev)
			if serial == stopSerial {
				return
			}
			s.mu.Lock()
			if se := s.bySerial[serial]; se != nil && se.suspect.IsZero() {
				se.suspect = now.Add(s.cfg.HangupGrace)
				s.traceLocked("suspect", se)
			}
			s.mu.Unlock()
		}
		s.recheck(now)
	}
}

// nextCheck is the epoll timeout in ms until the earliest suspect is due.
func (s *Store) nextCheck() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, se := range s.bySerial {
		if !se.suspect.IsZero() && (next.IsZero() || se.suspect.Before(next)) {
			next = se.suspect
		}
	}
	if next.IsZero() {
		return -1
	}
	d := time.Until(next)
	if d <= 0 {
		return 0
	}
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

func (s *Store) recheck(now time.Time) {
	var gone []msg.SessionInfo
	s.mu.Lock()
	for _, se := range s.bySerial {
		if se.suspect.IsZero() || se.suspect.After(now) {
			continue
		}
		fd := int(se.f.Fd())
		if hungUp(fd) {
			s.removeLocked(se, false)
			gone = append(gone, se.info)
			continue
		}
		se.suspect = time.Time{}
		s.traceLocked("rearm", se)
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_MOD, fd, epollEvent(unix.EPOLLONESHOT, se.serial)); err != nil {
			s.log.Error("ptystore: re-arm watch failed", "id", se.info.ID, "err", err)
		}
	}
	s.mu.Unlock()
	for _, info := range gone {
		s.dropped(info, "shell exited")
	}
}

func (s *Store) traceLocked(event string, se *session) {
	if s.cfg.trace != nil {
		s.cfg.trace(event, se.info.ID)
	}
}
