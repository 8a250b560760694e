package runner

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdStore is one unit's fd store (FileDescriptorStoreMax=): fds the
// service handed over with FDSTORE=1, kept across its restarts and passed
// back after its sockets. Unless stored with FDPOLL=0, an fd is dropped
// as soon as it reports POLLHUP or POLLERR, as systemd does, so a store
// of connections cleans itself when peers go away.
type fdStore struct {
	unit string
	max  int
	log  *slog.Logger

	mu      sync.Mutex
	entries []*storedFD // in the order stored, which is the order handed back
	serial  uint64
	closed  bool

	epfd   int
	wakefd int // eventfd: stops the poll loop
	done   chan struct{}
}

// Stored fds are kept as plain numbers, never *os.File: os.File's Fd()
// would switch a nonblocking fd (a pty master the service polls) to
// blocking mode, and that flag belongs to the open file the service shares.
type storedFD struct {
	name   string
	fd     int
	poll   bool
	serial uint64
}

func newFDStore(unit string, max int, log *slog.Logger) (*fdStore, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("runner: %s fd store: epoll: %w", unit, err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("runner: %s fd store: eventfd: %w", unit, err)
	}
	// Serial 0 is the wake fd; stored fds count from 1.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("runner: %s fd store: %w", unit, err)
	}
	s := &fdStore{unit: unit, max: max, log: log, epfd: epfd, wakefd: wake, done: make(chan struct{})}
	go s.pollLoop()
	return s, nil
}

var errStoreFull = errors.New("fd store full")

// add takes ownership of fd: stored, or closed if it cannot be.
func (s *fdStore) add(name string, fd int, poll bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		unix.Close(fd)
		return errors.New("fd store closed")
	}
	if len(s.entries) >= s.max {
		unix.Close(fd)
		return fmt.Errorf("%w: %d fds (fdstore_max)", errStoreFull, s.max)
	}
	s.serial++
	e := &storedFD{name: name, fd: fd, poll: poll, serial: s.serial}
	if poll {
		// No events asked: EPOLLHUP and EPOLLERR are always reported.
		ev := unix.EpollEvent{Events: 0}
		setSerial(&ev, e.serial)
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			// Regular files cannot be polled (EPERM); systemd keeps them
			// unpolled too.
			if !errors.Is(err, unix.EPERM) {
				unix.Close(fd)
				return fmt.Errorf("epoll: %w", err)
			}
			e.poll = false
		}
	}
	s.entries = append(s.entries, e)
	return nil
}

// remove drops every fd stored under name and returns how many.
func (s *fdStore) remove(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	kept := s.entries[:0]
	for _, e := range s.entries {
		if e.name == name {
			s.drop(e)
			n++
			continue
		}
		kept = append(kept, e)
	}
	clear(s.entries[len(kept):])
	s.entries = kept
	return n
}

// drop closes one entry; the caller removes it from entries.
func (s *fdStore) drop(e *storedFD) {
	if e.poll {
		unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
	}
	unix.Close(e.fd)
}

// files returns duplicates of the stored fds and their names, in store
// order, for a new process: duplicates, so a drop racing with the start
// cannot close (or let the number be reused) under it. The caller closes
// them.
func (s *fdStore) files() ([]rawFD, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fds := make([]rawFD, 0, len(s.entries))
	names := make([]string, 0, len(s.entries))
	for _, e := range s.entries {
		fd, err := unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			closeRaw(fds)
			return nil, nil, fmt.Errorf("runner: %s fd store: dup %s: %w", s.unit, e.name, err)
		}
		fds = append(fds, rawFD(fd))
		names = append(names, e.name)
	}
	return fds, names, nil
}

// names lists what is stored, in order.
func (s *fdStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.entries))
	for i, e := range s.entries {
		out[i] = e.name
	}
	return out
}

func (s *fdStore) pollLoop() {
	defer close(s.done)
	events := make([]unix.EpollEvent, 32)
	for {
		n, err := unix.EpollWait(s.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			s.log.Error("runner: fd store poll failed", "unit", s.unit, "err", err)
			return
		}
		for _, ev := range events[:n] {
			serial := getSerial(&ev)
			if serial == 0 {
				return // close() woke us
			}
			if ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) == 0 {
				continue
			}
			s.mu.Lock()
			for i, e := range s.entries {
				if e.serial == serial {
					s.drop(e)
					s.entries = append(s.entries[:i], s.entries[i+1:]...)
					s.log.Info("runner: fd store: dropped an fd that hung up", "unit", s.unit, "fdname", e.name,
						"pollhup", ev.Events&unix.EPOLLHUP != 0, "pollerr", ev.Events&unix.EPOLLERR != 0)
					break
				}
			}
			s.mu.Unlock()
		}
	}
}

func (s *fdStore) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, e := range s.entries {
		s.drop(e)
	}
	s.entries = nil
	s.mu.Unlock()
	var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	unix.Write(s.wakefd, one)
	<-s.done
	unix.Close(s.epfd)
	unix.Close(s.wakefd)
}

// The epoll data word carries the entry's serial, never its fd number:
// numbers are reused as soon as an fd is closed, serials never.
func setSerial(ev *unix.EpollEvent, serial uint64) {
	ev.Fd = int32(uint32(serial))
	ev.Pad = int32(uint32(serial >> 32))
}

func getSerial(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// rawFD hands a plain fd number to spawn, which only needs Control.
type rawFD int

func (fd rawFD) SyscallConn() (syscall.RawConn, error) { return rawConn(fd), nil }

type rawConn int

func (c rawConn) Control(f func(uintptr)) error  { f(uintptr(c)); return nil }
func (c rawConn) Read(func(uintptr) bool) error  { return errors.ErrUnsupported }
func (c rawConn) Write(func(uintptr) bool) error { return errors.ErrUnsupported }

func closeRaw(fds []rawFD) {
	for _, fd := range fds {
		unix.Close(int(fd))
	}
}
