package hub

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller waits for output on every pty of a hub through one epoll
// instance and one goroutine, so that an idle session costs no goroutine
// (a parked goroutine's stack was a third of an idle session's memory).
// A session's reader runs on a goroutine of its own only while there is
// something to read; once the pty says EAGAIN, the reader arms it here
// and its goroutine ends, and the poller starts it again when the pty is
// readable (reader.go).
//
// Ptys are armed one-shot, as the waiter does (waiter.go): a pty that is
// being read raises no event, so a flooding shell does not wake the
// poller every 4 KiB.
type poller struct {
	ep *os.File
	rc syscall.RawConn

	mu    sync.Mutex
	wakes map[int32]func(inline bool) // by pty fd: what to call when it is ready
	done  chan struct{}               // closed when the loop has returned
}

func newPoller() (*poller, error) {
	ep, rc, err := newEpoll()
	if err != nil {
		return nil, err
	}
	p := &poller{ep: ep, rc: rc, wakes: map[int32]func(bool){}, done: make(chan struct{})}
	go p.loop()
	return p, nil
}

// add registers pty fd, disarmed, with the function its readiness calls
// on the poller's goroutine. wake(true) may do its work there (it must
// not block); wake(false) must hand it to a goroutine of its own. The
// caller removes fd before closing it; a wake already under way may
// still be called after.
func (p *poller) add(fd int, wake func(inline bool)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	if cerr := p.rc.Control(func(ep uintptr) {
		// No events: EPOLLHUP and EPOLLERR too are reported only once
		// armed.
		err = unix.EpollCtl(int(ep), unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(fd)})
	}); cerr != nil {
		return fmt.Errorf("epoll add: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	p.wakes[int32(fd)] = wake
	return nil
}

// arm asks for one wake once fd is readable (or hung up). The kernel
// checks readiness as it arms, so a reader that saw EAGAIN and then arms
// misses nothing.
func (p *poller) arm(fd int) error {
	var err error
	if cerr := p.rc.Control(func(ep uintptr) {
		err = unix.EpollCtl(int(ep), unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)})
	}); cerr != nil {
		return fmt.Errorf("epoll arm: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("epoll arm: %w", err)
	}
	return nil
}

// remove forgets fd: no event for it is taken after it returns, and fd
// may be closed. A wake taken before may still be under way.
func (p *poller) remove(fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.wakes, int32(fd))
	p.rc.Control(func(ep uintptr) {
		unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, fd, nil)
	})
}

// close stops the loop; every pty must have been removed.
func (p *poller) close() {
	p.ep.Close()
	<-p.done
}

func (p *poller) loop() {
	defer close(p.done)
	var evs [32]unix.EpollEvent
	var ready []func(bool)
	for {
		n := 0
		var werr error
		err := p.rc.Read(func(ep uintptr) bool {
			for {
				n, werr = unix.EpollWait(int(ep), evs[:], 0)
				if werr == unix.EINTR {
					continue
				}
				// Nothing yet: park until the epoll fd is readable.
				return werr != nil || n > 0
			}
		})
		if err != nil {
			return // closed
		}
		if werr != nil {
			// EBADF, EFAULT or EINVAL: a bug here, not input.
			panic(fmt.Sprintf("hub: poller: epoll_wait: %v", werr))
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, e := range evs[:n] {
			if wake := p.wakes[e.Fd]; wake != nil {
				ready = append(ready, wake)
			}
		}
		p.mu.Unlock()
		// The last pty is read here, the others on goroutines of their
		// own: a key's echo costs no goroutine start (whose wake-up of
		// an idle thread was two more context switches per key), and a
		// burst on several ptys is still read on every core.
		for i, wake := range ready {
			wake(i == len(ready)-1)
		}
		clear(ready)
	}
}
