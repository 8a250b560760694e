package record

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultResizePoll is how often the outer terminal's size is read, on
// top of before every input: a recorder that could not take the outer pty
// as its terminal gets no SIGWINCH, and one that did need not trust
// signals the frontend can also send (TIOCSIG on the outer master).
const DefaultResizePoll = 100 * time.Millisecond

// Splice is one recorded session: the shell's pty (Inner, its master) and
// the pty the frontend sees (Outer, its slave, put in raw mode). Every
// byte the shell writes is recorded before it is passed on; what is typed
// is recorded too when Input is set.
type Splice struct {
	Inner, Outer *os.File
	W            *Writer
	Input        bool
	// FailOpen: a failed write stops recording and the session goes on;
	// otherwise the session is ended with a message on its terminal.
	FailOpen   bool
	ResizePoll time.Duration
	Log        *slog.Logger

	ready  bool
	mu     sync.Mutex
	sizeMu sync.Mutex // rows, cols; held while a change is passed on
	rows   uint16
	cols   uint16
}

// Run copies until either side ends, ctx is done, or (fail-closed) a
// write fails; then it closes both ends, which hangs up the shell, and
// writes the end seal. The returned error says why it ended when that was
// not one side hanging up.
func (s *Splice) Run(ctx context.Context) error {
	if !s.ready {
		if err := s.Prepare(); err != nil {
			return err
		}
	}
	inner, outer := s.Inner, s.Outer
	if s.ResizePoll <= 0 {
		s.ResizePoll = DefaultResizePoll
	}
	done := make(chan error, 4)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); done <- s.output(inner, outer) }()
	go func() { defer wg.Done(); done <- s.input(inner, outer) }()
	go func() { defer wg.Done(); s.resizes(inner, outer, stop, done) }()
	var why error
	select {
	case why = <-done:
	case <-ctx.Done():
		why = fmt.Errorf("recording helper stopping: %w", context.Cause(ctx))
		s.tell(outer, "the recording helper is stopping")
	}
	close(stop)
	// Closing interrupts the other side's read (the fds are in Go's
	// poller); the shell sees its master close and gets SIGHUP.
	inner.Close()
	outer.Close()
	wg.Wait()
	s.mu.Lock()
	if s.W != nil {
		if err := s.W.End(time.Now()); err != nil && s.Log != nil {
			s.Log.Warn("record: end seal", "err", err)
		}
	}
	s.mu.Unlock()
	if errors.Is(why, errHangup) {
		return nil
	}
	return why
}

var errHangup = errors.New("hung up")

// Prepare puts both ends in Go's poller and the outer terminal in raw
// mode. It must be done before the outer master reaches anyone: typed
// bytes that arrive while the outer slave is still cooked would be echoed
// by it, reaching the page without passing the recorder.
func (s *Splice) Prepare() error {
	inner, err := pollable(s.Inner)
	if err != nil {
		return err
	}
	outer, err := pollable(s.Outer)
	if err != nil {
		inner.Close()
		return err
	}
	if err := makeRaw(outer); err != nil {
		inner.Close()
		outer.Close()
		return err
	}
	s.Inner, s.Outer, s.ready = inner, outer, true
	return nil
}

// record writes an event; a failure either stops recording (fail-open) or
// is returned, ending the session.
func (s *Splice) record(kind byte, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.W == nil {
		return nil
	}
	err := s.W.Event(time.Now(), kind, data)
	if err == nil {
		return nil
	}
	if s.FailOpen {
		if s.Log != nil {
			s.Log.Error("record: recording stopped, session goes on (fail-open)", "err", err)
		}
		s.W = nil
		return nil
	}
	return err
}

func (s *Splice) tell(outer *os.File, why string) {
	outer.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(outer, "\r\n[sluice: %s; this session is ended]\r\n", why)
}

// output: shell to terminal, recorded first.
func (s *Splice) output(inner, outer *os.File) error {
	buf := make([]byte, 64<<10)
	held := 0 // bytes of a character not yet complete, at buf's start
	rc, err := inner.SyscallConn()
	if err != nil {
		return err
	}
	for {
		n, err := readBatch(rc, buf[held:])
		n += held
		k := n
		if err == nil {
			k = completeUTF8(buf[:n])
		}
		if k > 0 {
			if rerr := s.record('o', buf[:k]); rerr != nil {
				s.tell(outer, "recording failed ("+rerr.Error()+")")
				return fmt.Errorf("record: output: %w", rerr)
			}
			if _, werr := outer.Write(buf[:k]); werr != nil {
				return errHangup
			}
		}
		if err != nil {
			return errHangup
		}
		held = copy(buf, buf[k:n])
	}
}

// readBatch reads what is there, up to len(buf), in as many reads as the
// pty needs (it hands out at most a few KiB a read), waiting in Go's
// poller only while nothing is: one event, one seal and one write for a
// burst, instead of one per pty buffer.
func readBatch(rc syscall.RawConn, buf []byte) (int, error) {
	n := 0
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for n < len(buf) {
			k, err := unix.Read(int(fd), buf[n:])
			if k > 0 {
				n += k
				continue
			}
			if err == unix.EAGAIN {
				return n > 0
			}
			if err == unix.EINTR {
				continue
			}
			if err == nil {
				err = io.EOF
			}
			rerr = err
			return true
		}
		return true
	})
	if n > 0 {
		return n, nil // an error comes again on the next read
	}
	if rerr != nil {
		return 0, rerr
	}
	return 0, err
}

// input: terminal to shell, recorded first when Input is set.
func (s *Splice) input(inner, outer *os.File) error {
	buf := make([]byte, 4<<10)
	for {
		n, err := outer.Read(buf)
		if n > 0 {
			// A resize the frontend made before typing reaches the shell
			// before what was typed, as it would without the recorder.
			if rerr := s.syncSize(inner, outer); rerr != nil {
				return rerr
			}
			if s.Input {
				if rerr := s.record('i', buf[:n]); rerr != nil {
					s.tell(outer, "recording failed ("+rerr.Error()+")")
					return fmt.Errorf("record: input: %w", rerr)
				}
			}
			if _, werr := inner.Write(buf[:n]); werr != nil {
				return errHangup
			}
		}
		if err != nil {
			return errHangup
		}
	}
}

// resizes passes the outer size to the inner pty (whose foreground group
// gets SIGWINCH from the kernel) and records it as an r event.
func (s *Splice) resizes(inner, outer *os.File, stop <-chan struct{}, done chan<- error) {
	t := time.NewTicker(s.ResizePoll)
	defer t.Stop()
	for {
		if err := s.syncSize(inner, outer); err != nil {
			done <- err
			return
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (s *Splice) syncSize(inner, outer *os.File) error {
	s.sizeMu.Lock()
	defer s.sizeMu.Unlock()
	var ws *unix.Winsize
	var err error
	rc, cerr := outer.SyscallConn()
	if cerr != nil {
		return nil
	}
	rc.Control(func(fd uintptr) { ws, err = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) })
	if err != nil || ws.Row == 0 || ws.Col == 0 || (ws.Row == s.rows && ws.Col == s.cols) {
		return nil
	}
	s.rows, s.cols = ws.Row, ws.Col
	if rc, err := inner.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) })
	}
	if rerr := s.record('r', []byte(strconv.Itoa(int(ws.Col))+"x"+strconv.Itoa(int(ws.Row)))); rerr != nil {
		s.tell(outer, "recording failed ("+rerr.Error()+")")
		return fmt.Errorf("record: resize: %w", rerr)
	}
	return nil
}

// pollable returns a non-blocking dup of f in Go's poller, so that Close
// interrupts a Read blocked in another goroutine, and closes f.
func pollable(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("record: %s: %w", f.Name(), err)
	}
	nfd := -1
	rc.Control(func(fd uintptr) { nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		return nil, fmt.Errorf("record: dup %s: %w", f.Name(), err)
	}
	name := f.Name()
	f.Close()
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("record: %s: %w", name, err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// makeRaw is cfmakeraw(3) on the outer slave: the inner pty's line
// discipline already did echo and CR/LF; a second one would do them
// twice.
func makeRaw(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	rc.Control(func(fd uintptr) {
		var t *unix.Termios
		if t, ierr = unix.IoctlGetTermios(int(fd), unix.TCGETS); ierr != nil {
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		ierr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	if ierr != nil {
		return fmt.Errorf("record: outer terminal raw: %w", ierr)
	}
	return nil
}
