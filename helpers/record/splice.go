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
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
	"sluice/internal/termsock"
)

// Splice is one recorded session: the shell's pty (Inner, its master)
// and the recorder's end of the session socket (Outer, package termsock),
// whose other end ptystore and the frontend hold. Every byte the shell
// writes is recorded before it is passed on; what is typed is recorded
// too when Input is set; every size change is applied to the shell's pty
// and recorded.
type Splice struct {
	Inner, Outer *os.File
	W            *Writer
	Input        bool
	// FailOpen: a failed write stops recording and the session goes on;
	// otherwise the session is ended with a message on its terminal.
	FailOpen bool
	Log      *slog.Logger
	// EndShell, when set, is given the shell's master when the session
	// is ended from outside (the socket shut down by ptystore or the
	// frontend, or every copy of its other end closed; the recorder told
	// to stop; a fail-closed recording failure), after the end seal: the
	// hangup helper ends the shell's own session with it, as ptystore's
	// hangup ends an unrecorded one (its cgroup or logind scope, and
	// SIGKILL after the grace). Without it, or when it fails, the shell
	// gets only the pty hangup, which children that left its session
	// with setsid or ignore SIGHUP survive.
	EndShell func(ctx context.Context, inner *os.File) error

	ready  bool
	mu     sync.Mutex
	sizeMu sync.Mutex // rows, cols; held while a change is passed on
	rows   uint16
	cols   uint16
}

// Run copies until either side ends, ctx is done, or (fail-closed) a
// write fails; then it writes the end seal, has the shell's session
// ended (EndShell), and only then closes the socket: whoever shut it down
// to end the session (ptystore) sees it close once the shell is gone.
// The returned error says why it ended when that was not one side
// hanging up.
func (s *Splice) Run(ctx context.Context) error {
	if !s.ready {
		if err := s.Prepare(); err != nil {
			return err
		}
	}
	inner, outer := s.Inner, s.Outer
	done := make(chan error, 4)
	wake, err := newWaker()
	if err != nil {
		inner.Close()
		outer.Close()
		return err
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); done <- s.output(inner, outer, &wg) }()
	go func() { defer wg.Done(); done <- s.input(inner, outer) }()
	go func() { defer wg.Done(); done <- watchShutdown(outer, wake) }()
	var why error
	select {
	case why = <-done:
	case <-ctx.Done():
		why = fmt.Errorf("recording helper stopping: %w", context.Cause(ctx))
		s.tell(outer, "the recording helper is stopping")
	}
	// Stop both copies without closing either end yet (the fds are in
	// Go's poller, so blocked reads and writes return at the deadline).
	// No byte passes after this, so the end seal is the end.
	wake.Close()
	inner.SetDeadline(time.Unix(1, 0))
	outer.SetDeadline(time.Unix(1, 0))
	wg.Wait()
	s.mu.Lock()
	if s.W != nil {
		if err := s.W.End(time.Now()); err != nil && s.Log != nil {
			s.Log.Warn("record: end seal", "err", err)
		}
	}
	s.mu.Unlock()
	if !errors.Is(why, errShellGone) {
		s.endShell(inner)
	}
	// The page and ptystore see the session end; the shell sees its
	// master close and gets SIGHUP, if it is still there.
	outer.Close()
	inner.Close()
	if errors.Is(why, errShellGone) || errors.Is(why, errOuterGone) {
		return nil
	}
	return why
}

// Why a copy ended: the shell's side hung up (it exited; its session is
// left as an unrecorded one would be when its shell exits), or the
// terminal's (every copy of the outer master closed).
var (
	errShellGone = errors.New("the shell hung up")
	errOuterGone = errors.New("the terminal hung up")
)

// EndShellTimeout bounds the hand-over of the shell's master: the hangup
// helper's grace (2 s) and the SIGKILL rounds that follow fit in it.
const EndShellTimeout = 15 * time.Second

// endShell hands the shell's master to EndShell while the shell's last
// output is read and dropped (the page is gone, and a shell blocked
// writing to a full pty would wait for SIGKILL instead of ending on
// SIGHUP). EndShell gets a dup: passing an fd on (os.File.Fd) makes its
// file description blocking, so the drain polls with a timeout instead
// of relying on Go's poller.
func (s *Splice) endShell(inner *os.File) {
	if s.EndShell == nil {
		return
	}
	rc, err := inner.SyscallConn()
	if err != nil {
		return
	}
	nfd := -1
	rc.Control(func(fd uintptr) { nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		if s.Log != nil {
			s.Log.Error("record: dup of the shell's master", "err", err)
		}
		return
	}
	dup := os.NewFile(uintptr(nfd), inner.Name())
	defer dup.Close()
	stop := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		drain(rc, stop)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), EndShellTimeout)
	err = s.EndShell(ctx, dup)
	cancel()
	if err != nil && s.Log != nil {
		s.Log.Error("record: the shell's session was not ended by the hangup helper; it gets the pty hangup only", "err", err)
	}
	close(stop)
	<-drained
}

// drain reads and drops what the shell writes until its side hangs up or
// stop is closed.
func drain(rc syscall.RawConn, stop <-chan struct{}) {
	b := make([]byte, 16<<10)
	for {
		select {
		case <-stop:
			return
		default:
		}
		gone := false
		rc.Control(func(fd uintptr) {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(p, 50)
			if err != nil || n == 0 {
				return
			}
			if p[0].Revents&unix.POLLIN != 0 {
				if k, err := unix.Read(int(fd), b); k > 0 || err == unix.EAGAIN || err == unix.EINTR {
					return
				}
			}
			gone = p[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL|unix.POLLIN) != 0
		})
		if gone {
			return
		}
	}
}

// Prepare puts both ends in Go's poller and reads the shell's window
// size, so that only changes are recorded.
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
	if rows, cols, err := pty.GetSize(inner); err == nil {
		s.rows, s.cols = rows, cols
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

// outBuffers is how many bursts are in flight: one being read, one being
// recorded, one being passed on, and one spare.
const outBuffers = 4

// chunk is a burst read from the shell: whole characters only, and the
// read's error, after which nothing more comes.
type chunk struct {
	b   []byte
	err error
}

// output: shell to terminal, recorded first. Reading, recording and
// passing on run in three goroutines, a burst moving from one to the next
// only when the one before is done with it: the shell's pty is read while
// the previous burst is encoded, sealed and written to the file, and the
// one before that is written to the socket. Done one after the other,
// that work stalled the shell. A burst reaches the socket only after its
// event and seal are written (forward takes only what record has
// finished), so the guarantees of docs/recording.md hold as with one
// goroutine. wg counts the reader and the forwarder, which stop when quit
// is closed or at the deadlines Run sets.
func (s *Splice) output(inner, outer *os.File, wg *sync.WaitGroup) error {
	rc, err := inner.SyscallConn()
	if err != nil {
		return err
	}
	free := make(chan []byte, outBuffers)
	for range outBuffers {
		free <- make([]byte, 64<<10)
	}
	full := make(chan chunk, outBuffers)
	sealed := make(chan []byte, outBuffers)
	fwd := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit)
	wg.Add(2)
	go func() {
		defer wg.Done()
		readOutput(rc, free, full, quit)
	}()
	// inflight is how many recorded bursts the forwarder has not yet
	// written. At 0 a small burst (an echo) is written here: handing it
	// on would add a wakeup to every keystroke, and no earlier burst can
	// still be on its way, so the order holds.
	var inflight atomic.Int32
	go func() {
		defer wg.Done()
		fwd <- forward(outer, sealed, free, &inflight, quit)
	}()
	// flush lets the forwarder pass on what is recorded already, and
	// waits for it: nothing else may write to the socket meanwhile.
	flush := func() error {
		close(sealed)
		return <-fwd
	}
	for {
		var c chunk
		select {
		case c = <-full:
		case err := <-fwd:
			return err
		}
		if len(c.b) > 0 {
			if rerr := s.record('o', c.b); rerr != nil {
				outer.SetWriteDeadline(time.Now().Add(time.Second))
				flush()
				s.tell(outer, "recording failed ("+rerr.Error()+")")
				return fmt.Errorf("record: output: %w", rerr)
			}
			if len(c.b) <= directMax && inflight.Load() == 0 {
				if _, err := outer.Write(c.b); err != nil {
					return errOuterGone
				}
				free <- c.b[:cap(c.b)]
			} else {
				inflight.Add(1)
				select {
				case sealed <- c.b:
				case err := <-fwd:
					return err
				}
			}
		} else {
			free <- c.b[:cap(c.b)]
		}
		if c.err != nil {
			if err := flush(); err != nil {
				return err
			}
			return errShellGone
		}
	}
}

// directMax is the largest burst output writes to the socket itself when
// the forwarder is idle: one that takes no longer than the handoff.
const directMax = 4 << 10

// forward writes recorded bursts to the socket and returns their buffers.
// It stops when sealed is closed (after what it holds is written) or
// quit is (output has returned: what is left will not be sent).
func forward(outer *os.File, sealed <-chan []byte, free chan<- []byte, inflight *atomic.Int32, quit <-chan struct{}) error {
	for {
		var b []byte
		select {
		case b0, ok := <-sealed:
			if !ok {
				return nil
			}
			b = b0
		case <-quit:
			return nil
		}
		if _, err := outer.Write(b); err != nil {
			return errOuterGone
		}
		inflight.Add(-1)
		free <- b[:cap(b)]
	}
}

// readOutput reads bursts into free buffers and hands them on, holding
// back a character split across reads until it is whole, so that every o
// event is valid UTF-8 where the output is.
func readOutput(rc syscall.RawConn, free chan []byte, full chan<- chunk, quit <-chan struct{}) {
	var held [utf8.UTFMax]byte
	nheld := 0
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-quit:
			return
		}
		copy(buf, held[:nheld])
		n, err := readBatch(rc, buf[nheld:])
		n += nheld
		k := n
		if err == nil {
			k = completeUTF8(buf[:n])
		}
		nheld = copy(held[:], buf[k:n])
		select {
		case full <- chunk{b: buf[:k], err: err}:
		case <-quit:
			return
		}
		if err != nil {
			return
		}
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

// input: frames from the terminal side (termsock): typed bytes to the
// shell, recorded first when Input is set, and window sizes to the
// shell's pty, recorded as r events. A frame that is not one ends the
// session: its writer is broken or hostile, and nothing after it can be
// read as frames.
func (s *Splice) input(inner, outer *os.File) error {
	buf := make([]byte, 4*(termsock.HeaderLen+termsock.MaxPayload))
	have := 0
	for {
		n, err := outer.Read(buf[have:])
		have += n
		off := 0
		for {
			typ, p, k, ferr := termsock.Next(buf[off:have])
			if ferr != nil {
				s.tell(outer, "the terminal sent an invalid frame")
				return fmt.Errorf("record: input: %w", ferr)
			}
			if k == 0 {
				break
			}
			off += k
			if typ == termsock.Resize {
				cols, rows := termsock.ParseResize(p)
				if rerr := s.resize(inner, outer, cols, rows); rerr != nil {
					return rerr
				}
				continue
			}
			if s.Input {
				if rerr := s.record('i', p); rerr != nil {
					s.tell(outer, "recording failed ("+rerr.Error()+")")
					return fmt.Errorf("record: input: %w", rerr)
				}
			}
			if _, werr := inner.Write(p); werr != nil {
				return errShellGone
			}
		}
		have = copy(buf, buf[off:have])
		if err != nil || n == 0 {
			return errOuterGone
		}
	}
}

// resize sets a new size on the shell's pty (whose foreground group gets
// SIGWINCH from the kernel) and records it as an r event.
func (s *Splice) resize(inner, outer *os.File, cols, rows uint16) error {
	s.sizeMu.Lock()
	defer s.sizeMu.Unlock()
	if rows == 0 || cols == 0 || (rows == s.rows && cols == s.cols) {
		return nil
	}
	s.rows, s.cols = rows, cols
	if rc, err := inner.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}) })
	}
	if rerr := s.record('r', []byte(strconv.Itoa(int(cols))+"x"+strconv.Itoa(int(rows)))); rerr != nil {
		s.tell(outer, "recording failed ("+rerr.Error()+")")
		return fmt.Errorf("record: resize: %w", rerr)
	}
	return nil
}

// waker wakes watchShutdown when the splice ends: its read end polls
// POLLHUP once the write end is closed.
type waker struct{ r, w *os.File }

func newWaker() (*waker, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("record: pipe: %w", err)
	}
	return &waker{r, w}, nil
}

func (k *waker) Close() {
	if k.w != nil {
		k.w.Close()
		k.w = nil
	}
}

// watchShutdown returns errOuterGone when the other end of the socket
// stops sending (POLLRDHUP: shutdown(SHUT_WR) by ptystore ending the
// session, or every copy of it closed), and nil when woken. Reading
// would see it too, but only after every frame before it, and not while
// a write to a shell that reads no input blocks: ending a session must
// not wait for the shell.
func watchShutdown(outer *os.File, wake *waker) error {
	defer wake.r.Close()
	rc, err := outer.SyscallConn()
	if err != nil {
		return nil
	}
	gone := false
	rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}, {Fd: int32(wake.r.Fd()), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(p, -1)
			if err == unix.EINTR {
				continue
			}
			gone = err == nil && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
			return
		}
	})
	if gone {
		return errOuterGone
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
