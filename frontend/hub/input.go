package hub

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

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
