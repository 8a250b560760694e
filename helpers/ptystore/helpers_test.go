package ptystore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/grant"
	"sluice/internal/ticket"
	"sluice/internal/ticket/tickettest"
	"sluice/msg"
)

// waitLimit bounds every wait on an event in these tests. It is a guard
// against hanging for ever, not a measurement: nothing asserts on time.
const waitLimit = 20 * time.Second

// testLog sends the store's and server's logs to the test log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// openPTY opens a new pty pair and returns master and slave, both as files
// made with os.NewFile so that Fd never changes their blocking mode.
func openPTY(t testing.TB) (master, slave *os.File) {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		t.Fatal(errno)
	}
	return os.NewFile(uintptr(mfd), "ptmx"), os.NewFile(sfd, "pts")
}

// shell is /bin/sh running interactively on a pty, as its session leader
// with the pty as controlling terminal: what the shell helper produces.
type shell struct {
	master *os.File
	cmd    *exec.Cmd
	waited chan struct{}
	state  *os.ProcessState
}

func startShell(t testing.TB) *shell {
	t.Helper()
	master, slave := openPTY(t)
	cmd := exec.Command("/bin/sh", "-i")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PS1=$ ", "TERM=dumb", "HOME=/"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	sh := &shell{master: master, cmd: cmd, waited: make(chan struct{})}
	go func() {
		cmd.Wait()
		sh.state = cmd.ProcessState
		close(sh.waited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-sh.waited
		master.Close()
	})
	return sh
}

// exited waits for the shell to end and returns the signal that ended it
// (0 when it exited on its own).
func (sh *shell) exited(t testing.TB) syscall.Signal {
	t.Helper()
	select {
	case <-sh.waited:
	case <-time.After(waitLimit):
		t.Fatal("shell did not exit")
	}
	if sh.state == nil {
		t.Fatal("shell's exit status was reaped by someone else")
	}
	ws := sh.state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

// exitedStatus is exited for tests where an in-process runner's reaper may
// have taken the exit status: known is false then.
func (sh *shell) exitedStatus(t testing.TB) (sig syscall.Signal, known bool) {
	t.Helper()
	select {
	case <-sh.waited:
	case <-time.After(waitLimit):
		t.Fatal("shell did not exit")
	}
	if sh.state == nil {
		return 0, false
	}
	return sh.exited(t), true
}

func (sh *shell) running() bool {
	select {
	case <-sh.waited:
		return false
	default:
		return true
	}
}

// converse checks that f is a working master of a live shell: a command
// typed in comes back with its output. The command is written so that its
// echo does not contain the expected output.
func converse(t testing.TB, f *os.File) {
	t.Helper()
	word := fmt.Sprintf("hi%d", time.Now().UnixNano()%1000000)
	if _, err := fmt.Fprintf(f, "echo %s''%s\n", word[:2], word[2:]); err != nil {
		t.Fatalf("write to pty: %v", err)
	}
	readUntil(t, f, word+"\r\n")
}

// readUntil reads f (through a non-blocking dup, so a deadline works)
// until want appears.
func readUntil(t testing.TB, f *os.File, want string) {
	t.Helper()
	nfd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(nfd, true)
	r := os.NewFile(uintptr(nfd), "reader")
	defer r.Close()
	r.SetReadDeadline(time.Now().Add(waitLimit))
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading pty for %q: %v; got %q", want, err, got)
		}
	}
}

// fdStore is a test service manager: it does for $NOTIFY_SOCKET what
// systemd does with FDSTORE=1, FDSTOREREMOVE=1 and READY=1, so that the
// helper can be restarted with its stored fds as activation fds.
type fdStore struct {
	t    testing.TB
	addr string
	conn *net.UnixConn
	msgs chan string

	mu      sync.Mutex
	stored  []storedFD
	pending []string // received, not yet taken by waitMsg
}

type storedFD struct {
	name string
	f    *os.File
}

var storeSeq atomic.Int64

func newFDStore(t testing.TB) *fdStore {
	t.Helper()
	// Abstract, so that a helper running as another uid can reach it.
	addr := fmt.Sprintf("@sluice-ptystore-test-%d-%d", os.Getpid(), storeSeq.Add(1))
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fdStore{t: t, addr: addr, conn: conn, msgs: make(chan string, 1024)}
	done := make(chan struct{})
	go s.serve(done)
	t.Cleanup(func() {
		conn.Close()
		<-done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, sf := range s.stored {
			sf.f.Close()
		}
		s.stored = nil
	})
	return s
}

func (s *fdStore) serve(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*253))
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var files []*os.File
		if scms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range scms {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, fd := range fds {
						files = append(files, os.NewFile(uintptr(fd), "stored"))
					}
				}
			}
		}
		text := string(buf[:n])
		s.handle(text, files)
		s.msgs <- text
	}
}

func (s *fdStore) handle(text string, files []*os.File) {
	kv := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if kv["FDSTOREREMOVE"] == "1" {
		kept := s.stored[:0]
		for _, sf := range s.stored {
			if sf.name == kv["FDNAME"] {
				sf.f.Close()
				continue
			}
			kept = append(kept, sf)
		}
		s.stored = kept
	}
	for _, f := range files {
		if kv["FDSTORE"] != "1" {
			f.Close()
			continue
		}
		name := kv["FDNAME"]
		if name == "" {
			name = "stored"
		}
		// systemd keeps one copy of an open file: a second FDSTORE of it,
		// under whatever name, is ignored.
		dup := false
		for _, sf := range s.stored {
			if sameFile(sf.f, f) {
				dup = true
				break
			}
		}
		if dup {
			f.Close()
			continue
		}
		s.stored = append(s.stored, storedFD{name, f})
	}
}

// sameFile reports whether two fds of this process are the same open file.
func sameFile(a, b *os.File) bool {
	pid := uintptr(os.Getpid())
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, 0 /* KCMP_FILE */, a.Fd(), b.Fd(), 0)
	return errno == 0 && r == 0
}

// names lists the names of the stored fds.
func (s *fdStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sf := range s.stored {
		out = append(out, sf.name)
	}
	return out
}

// files returns dups of the stored fds, named, for handing to a restarted
// helper as activation fds.
func (s *fdStore) files() []*os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*os.File
	for _, sf := range s.stored {
		nfd, err := unix.FcntlInt(sf.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			s.t.Fatal(err)
		}
		out = append(out, os.NewFile(uintptr(nfd), sf.name))
	}
	return out
}

// waitMsg waits for a message that contains every one of parts and takes
// it; messages before it that did not match stay for later waits.
func (s *fdStore) waitMsg(t testing.TB, parts ...string) string {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		s.mu.Lock()
		for i, m := range s.pending {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(m, p)
			}
			if ok {
				s.pending = append(s.pending[:i], s.pending[i+1:]...)
				s.mu.Unlock()
				return m
			}
		}
		s.mu.Unlock()
		select {
		case m := <-s.msgs:
			s.mu.Lock()
			s.pending = append(s.pending, m)
			s.mu.Unlock()
		case <-timeout:
			t.Fatalf("no notify message with %q", parts)
		}
	}
}

// drain forgets the messages received so far.
func (s *fdStore) drain() {
	for {
		select {
		case <-s.msgs:
		default:
			s.mu.Lock()
			s.pending = nil
			s.mu.Unlock()
			return
		}
	}
}

// isClosedPipe reports whether every write end of the pipe r reads from is
// closed: a read then gets EOF rather than waiting.
func isClosedPipe(t testing.TB, r *os.File) bool {
	t.Helper()
	nfd, err := unix.FcntlInt(r.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(nfd, true)
	var b [1]byte
	n, err := unix.Read(nfd, b[:])
	unix.Close(nfd)
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	return n == 0 && err == nil || errors.Is(err, io.EOF)
}

// tk is the ticket policy would have given with f for info, as a caller
// that got both from create-shell-session passes it on. For an fd that is
// neither a pty master nor a unix stream socket, which policy never hands
// out, it is the empty ticket: those puts are refused for what the fd is.
func tk(t testing.TB, key grant.Key, info msg.SessionInfo, f *os.File) msg.SessionTicket {
	t.Helper()
	if _, err := ticket.Identify(f); err != nil {
		return msg.SessionTicket{}
	}
	return tickettest.For(t, key, info, f)
}
