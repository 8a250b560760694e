package hub

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// waiter waits for a pty to become ready (readable, or writable), through
// an epoll instance of its own in which the pty is armed one-shot only
// when a reader or writer has just seen EAGAIN. The epoll fd, not the
// pty, sits in the runtime's poller, so the waiting goroutine parks there
// and is readied directly when the pty is.
//
// Why not put the pty itself in the runtime's poller (a non-blocking
// *os.File): it registers fds edge-triggered for good, so while a shell
// floods, every 4 KiB the tty layer moves into the line discipline raises
// an event and wakes the thread parked in epoll_wait, for a reader that is
// not waiting. That context switch per read cost a fifth of `cat`
// throughput on a 2-core machine (BenchmarkCat100MB: 0.68 -> 0.93 of a
// direct blocking read). Armed one-shot, a streaming pty raises nothing.
type waiter struct {
	ep     *os.File
	rc     syscall.RawConn
	fd     int
	events uint32
	evs    [1]unix.EpollEvent
}

// newWaiter watches pty fd for events (EPOLLIN or EPOLLOUT); the caller
// keeps fd open until it has closed the waiter.
func newWaiter(fd int, events uint32) (*waiter, error) {
	ep, rc, err := newEpoll()
	if err != nil {
		return nil, err
	}
	// Registered disarmed (no events; EPOLLHUP and EPOLLERR are reported
	// only while armed, one-shot).
	var aerr error
	if cerr := rc.Control(func(epfd uintptr) {
		aerr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(fd)})
	}); cerr != nil {
		aerr = cerr
	}
	if aerr != nil {
		ep.Close()
		return nil, fmt.Errorf("epoll add: %w", aerr)
	}
	return &waiter{ep: ep, rc: rc, fd: fd, events: events}, nil
}

// newEpoll is a non-blocking epoll instance in the runtime's poller, so
// that a goroutine waiting on it parks instead of holding a thread.
func newEpoll() (*os.File, syscall.RawConn, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	return ep, rc, nil
}

// wait arms the pty and returns once it is ready, or with an error once
// the waiter is closed. The kernel checks readiness as it arms, so a
// caller that saw EAGAIN (or a short read) and then waits misses nothing.
//
// It arms inside the runtime's read, after the runtime has forgotten
// earlier readiness of the epoll fd: arming a pty that is ready (now or
// later) queues its event and so makes the epoll fd readable from then
// on, which the runtime sees and wakes the wait for; no epoll_wait is
// needed before parking, only the one that takes the event after.
func (w *waiter) wait() error {
	armed := false
	var aerr error
	err := w.rc.Read(func(ep uintptr) bool {
		if !armed {
			armed = true
			aerr = unix.EpollCtl(int(ep), unix.EPOLL_CTL_MOD, w.fd, &unix.EpollEvent{Events: w.events | unix.EPOLLONESHOT, Fd: int32(w.fd)})
			return aerr != nil
		}
		for {
			n, err := unix.EpollWait(int(ep), w.evs[:], 0)
			if err == unix.EINTR {
				continue
			}
			// Nothing yet: park until the epoll fd is readable again.
			return err == nil && n > 0
		}
	})
	if err != nil {
		return err
	}
	if aerr != nil {
		return fmt.Errorf("epoll arm: %w", aerr)
	}
	return nil
}

// close ends a pending wait; the pty's registration goes with the epoll
// instance.
func (w *waiter) close() { w.ep.Close() }
