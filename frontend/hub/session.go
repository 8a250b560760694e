package hub

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Session is one pty being streamed.
type Session struct {
	id   string
	h    *Hub
	opt  Options
	f    *os.File // non-blocking, not in the runtime's poller
	rc   syscall.RawConn
	fd   int     // f's, for the poller and the input's waiter; valid until f is closed
	poll *poller // the hub's, which watches f for the reader

	term terminal // a pty master or a recorded session's socket (term.go)

	mu      sync.Mutex
	ring    ring
	viewers []*Viewer
	exited  bool
	readErr error
	share   shareState

	// The reader's state (reader.go): whether its goroutine runs, was
	// woken while running, or waits for the poller; the stall clock's
	// timer.
	rdMu      sync.Mutex
	rdRunning bool
	rdAgain   bool
	rdArmed   bool
	rdTimer   *time.Timer

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
	first := false
	s.closeOnce.Do(func() {
		first = true
		close(s.closing)
		s.poll.remove(s.fd)
		s.inMu.Lock()
		s.inClosed = true
		s.dropInWaitLocked()
		s.inMu.Unlock()
		// The poller and the waiter go before f: they hold f's fd
		// number.
		s.f.Close()
		s.rdMu.Lock()
		if s.rdTimer != nil {
			s.rdTimer.Stop()
		}
		s.rdMu.Unlock()
	})
	// The stream ends here when no reader runs (as it does once an idle
	// reader's wait was cut), so that its viewers hear of it before the
	// caller's next word; a running reader ends it when it sees closing.
	if first && s.claimReader() {
		s.setErr(os.ErrClosed)
		s.finish()
	}
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
