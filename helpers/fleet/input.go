package fleet

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/termsock"
)

// SizePoll is how often a stream's window size is looked at between
// keys: the frontend sets it on the master with TIOCSWINSZ, which signals
// only the slave's foreground process group, and this helper is none.
// A resize reaches the host within it; a key carries it at once.
const SizePoll = 100 * time.Millisecond

// pumpInput sends what the frontend writes to the pty (read on its slave,
// peer) and the pty's window size, first and whenever it changes, as
// input frames on w (ssh's stdin), until the pty or w ends. Writes are
// blocking: a host that stops reading its input stops ours, as a pty
// would. It closes w, so ssh sends the end of input and the relay ends
// the stream.
func pumpInput(peer, w *os.File, poll time.Duration) error {
	defer w.Close()
	var (
		mu   sync.Mutex // one frame at a time on w
		last unix.Winsize
	)
	write := func(frame []byte) error {
		if _, err := w.Write(frame); err != nil {
			return fmt.Errorf("fleet: stream input: %w", err)
		}
		return nil
	}
	size := func() error {
		ws, err := winsize(peer)
		if err != nil || ws.Row == 0 || ws.Col == 0 || ws.Row > termsock.MaxSide || ws.Col > termsock.MaxSide {
			return nil // nothing the relay would take; the next change may be
		}
		mu.Lock()
		defer mu.Unlock()
		if ws == last {
			return nil
		}
		last = ws
		return write(termsock.AppendResize(nil, ws.Col, ws.Row))
	}
	if err := size(); err != nil {
		return err
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if size() != nil {
					return
				}
			}
		}
	}()
	buf := make([]byte, termsock.MaxPayload)
	frame := make([]byte, 0, len(buf)+termsock.HeaderLen)
	for {
		n, rerr := peer.Read(buf)
		if n > 0 {
			if err := size(); err != nil {
				return err
			}
			mu.Lock()
			frame = termsock.AppendInput(frame[:0], buf[:n])
			err := write(frame)
			mu.Unlock()
			if err != nil {
				return err
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return fmt.Errorf("fleet: stream input: %w", rerr)
		}
	}
}

func winsize(f *os.File) (unix.Winsize, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return unix.Winsize{}, err
	}
	var ws *unix.Winsize
	var ierr error
	if err := rc.Control(func(fd uintptr) { ws, ierr = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) }); err != nil {
		return unix.Winsize{}, err
	}
	if ierr != nil {
		return unix.Winsize{}, ierr
	}
	return *ws, nil
}

// openPeer opens the master's slave again (TIOCGPTPEER), non-blocking,
// as a file of Go's poller: a read on it ends when it is closed. ssh's
// stdout is the other open, blocking as ssh expects.
func openPeer(master *os.File) (*os.File, error) {
	rc, err := master.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd uintptr
	var errno unix.Errno
	if err := rc.Control(func(m uintptr) {
		fd, _, errno = unix.Syscall(unix.SYS_IOCTL, m, unix.TIOCGPTPEER,
			uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK))
	}); err != nil {
		return nil, err
	}
	if errno != 0 {
		return nil, fmt.Errorf("fleet: pty peer: %w", errno)
	}
	return os.NewFile(fd, "gateway-pty-input"), nil
}
