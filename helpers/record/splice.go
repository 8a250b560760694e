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
	// EndShell, when set, is given the shell's master when the session
	// is ended from outside (the outer pty hung up, the recorder told to
	// stop, a fail-closed recording failure), after the end seal: the
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
	// Stop both copies without closing the shell's master yet: the outer
	// side closed (nothing more reaches the page), the inner one past its
	// deadline (the fds are in Go's poller, so blocked reads and writes
	// return). No byte passes after this, so the end seal is the end.
	inner.SetDeadline(time.Unix(1, 0))
	outer.Close()
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
	// The shell sees its master close and gets SIGHUP, if it is still
	// there.
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
				return errOuterGone
			}
		}
		if err != nil {
			return errShellGone
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
				return errShellGone
			}
		}
		if err != nil {
			return errOuterGone
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
