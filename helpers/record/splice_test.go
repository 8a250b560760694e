package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/helpers/record/recordtest"
	"sluice/internal/pty"
	"sluice/internal/termsock"
	"sluice/msg"
)

// rig is a recorded session in one process: the "shell" writes to the
// inner slave, the "frontend" holds the session socket's other end.
type rig struct {
	shell    *os.File // inner slave
	front    *os.File // the session socket, as ptystore and the frontend get it
	path     string
	done     chan error
	received bytes.Buffer
	got      chan struct{}
}

func newRig(t *testing.T, input, failOpen bool, max int64) *rig {
	t.Helper()
	return newRigWith(t, context.Background(), input, failOpen, max, nil)
}

func newRigWith(t *testing.T, ctx context.Context, input, failOpen bool, max int64, endShell func(context.Context, *os.File) error) *rig {
	t.Helper()
	im, is, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs, err := termsock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{shell: is, front: theirs, path: filepath.Join(t.TempDir(), "r.cast"), done: make(chan error, 1), got: make(chan struct{}, 1)}
	f, err := os.Create(r.path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w, err := NewWriter(f, testKey, Header{Version: 2, Width: 80, Height: 24}, start, max)
	if err != nil {
		t.Fatal(err)
	}
	s := &Splice{Inner: im, Outer: mine, W: w, Input: input, FailOpen: failOpen, EndShell: endShell}
	if err := s.Prepare(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- s.Run(ctx); f.Close() }()
	t.Cleanup(func() { is.Close(); theirs.Close() })
	return r
}

// typeText writes typed bytes as the frontend does: as input frames.
func (r *rig) typeText(t *testing.T, s string) {
	t.Helper()
	if _, err := r.front.Write(termsock.AppendInput(nil, []byte(s))); err != nil {
		t.Fatal(err)
	}
}

// peerClosed: the recorder closed its end of the socket.
func peerClosed(f *os.File) bool {
	p := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
}

// drain reads what the frontend receives until the outer pty hangs up.
func (r *rig) drain() chan []byte {
	c := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r.front)
		c <- b
	}()
	return c
}

func events(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, MaxLine)
	sc.Scan()
	ev := map[string]string{}
	for sc.Scan() {
		var e []any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		k := e[1].(string)
		if k == "r" {
			ev[k] += e[2].(string) + ";"
		} else if k != "s" {
			ev[k] += e[2].(string)
		}
	}
	return ev
}

func TestSplice(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input bool
	}{{"record", false}, {"record input", true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.input, false, 0)
			recv := r.drain()
			sh := bufio.NewReader(r.shell)
			r.typeText(t, "first\r")
			if line, err := sh.ReadString('\n'); err != nil || line != "first\n" {
				t.Fatalf("shell read %q, %v", line, err)
			}
			// The frontend resizes and types at once: the shell must see
			// the new size by the time it reads what was typed. A size
			// sent again is not recorded again.
			r.front.Write(termsock.AppendResize(nil, 100, 30))
			r.front.Write(termsock.AppendResize(nil, 100, 30))
			r.typeText(t, "secret\r")
			line, err := sh.ReadString('\n')
			if err != nil || line != "secret\n" {
				t.Fatalf("shell read %q, %v", line, err)
			}
			if ws, err := winsize(r.shell); err != nil || ws != "100x30" {
				t.Fatalf("inner size %q, %v when the shell read its input", ws, err)
			}
			big := strings.Repeat("ünïcödé 0123456789 ", 20000)
			if _, err := r.shell.WriteString("hello\n" + big + "bye\n"); err != nil {
				t.Fatal(err)
			}
			r.shell.Close() // the shell exits
			var got []byte
			select {
			case got = <-recv:
			case <-time.After(10 * time.Second):
				t.Fatal("the session socket was not closed after the shell ended")
			}
			if err := <-r.done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			ev := events(t, r.path)
			if ev["o"] != string(got) {
				t.Fatalf("o events (%d bytes) differ from what the frontend received (%d bytes)", len(ev["o"]), len(got))
			}
			if !strings.Contains(string(got), "bye") {
				t.Fatalf("frontend got no output end: %q", got[max(0, len(got)-40):])
			}
			if ev["r"] != "100x30;" {
				t.Fatalf("r events %q", ev["r"])
			}
			if tc.input != (ev["i"] == "first\rsecret\r") || !tc.input && ev["i"] != "" {
				t.Fatalf("i events %q with input=%v", ev["i"], tc.input)
			}
			b, _ := os.ReadFile(r.path)
			if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != msg.RecIntact {
				t.Fatalf("verify: %+v", v)
			}
			if out := recordtest.Cat(t, r.path); string(out) != ev["o"] {
				t.Fatal("asciinema cat differs from the o events")
			}
		})
	}
}

// A recording that cannot be written ends a fail-closed session: the
// terminal says so, the shell is hung up, the file stays whole.
func TestSpliceFailClosed(t *testing.T) {
	r := newRig(t, false, false, 4096)
	recv := r.drain()
	go r.shell.WriteString(strings.Repeat("x", 10000))
	var got []byte
	select {
	case got = <-recv:
	case <-time.After(10 * time.Second):
		t.Fatal("session not ended when the recording failed")
	}
	if err := <-r.done; !errors.Is(err, ErrLimit) {
		t.Fatalf("Run = %v, want ErrLimit", err)
	}
	if !strings.Contains(string(got), "recording failed") {
		t.Fatalf("terminal got no message: %q", got[max(0, len(got)-100):])
	}
	// The shell's side is hung up.
	if _, err := r.shell.Read(make([]byte, 10)); err == nil {
		t.Fatal("shell's pty still readable after the session ended")
	}
	b, _ := os.ReadFile(r.path)
	if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != msg.RecCut || v.Sealed != int64(len(b)) {
		t.Fatalf("verify: %+v", v)
	}
	recordtest.Cat(t, r.path)
	// Everything the frontend saw (before the message) was recorded.
	ev := events(t, r.path)
	if !strings.HasPrefix(string(got), ev["o"]) || len(got) <= len(ev["o"]) {
		t.Fatalf("frontend saw %d bytes, recording holds %d", len(got), len(ev["o"]))
	}
	if strings.Count(string(got), "x") != strings.Count(ev["o"], "x") {
		t.Fatal("the frontend saw output that is not in the recording")
	}
}

// Fail-open: the session goes on unrecorded.
func TestSpliceFailOpen(t *testing.T) {
	r := newRig(t, false, true, 4096)
	recv := r.drain()
	if _, err := r.shell.WriteString(strings.Repeat("y", 10000) + "after\n"); err != nil {
		t.Fatal(err)
	}
	r.shell.Close()
	got := <-recv
	if err := <-r.done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if !strings.Contains(string(got), "after") || strings.Contains(string(got), "recording failed") {
		t.Fatalf("fail-open session cut: %q", got[max(0, len(got)-100):])
	}
}

// TestSpliceEndShell: a session ended from outside (the terminal hung up,
// the recorder told to stop, a fail-closed recording failure) hands the
// shell's master, still open, to EndShell (the hangup helper, which ends
// the shell's own session) after the end seal, while what the shell
// still writes is read and dropped: it neither reaches the page nor the
// recording, and does not block the shell. A shell that exits on its own
// leaves its session as an unrecorded one would: no hand-over.
func TestSpliceEndShell(t *testing.T) {
	cases := []struct {
		name   string
		end    func(r *rig, cancel context.CancelFunc)
		max    int64
		handed bool
		state  string // the recording when EndShell is called, or at the end
	}{
		{"the terminal hangs up", func(r *rig, _ context.CancelFunc) { r.front.Close() }, 0, true, msg.RecIntact},
		// ptystore ending it: every copy shares the shutdown, and the
		// frontend's copy stays open.
		{"the socket is shut down", func(r *rig, _ context.CancelFunc) { unix.Shutdown(int(r.front.Fd()), unix.SHUT_WR) }, 0, true, msg.RecIntact},
		{"the recorder is told to stop", func(_ *rig, cancel context.CancelFunc) { cancel() }, 0, true, msg.RecIntact},
		{"the recording fails, fail-closed", func(r *rig, _ context.CancelFunc) { r.shell.WriteString(strings.Repeat("x", 5000)) }, 2048, true, msg.RecCut},
		{"the shell exits", func(r *rig, _ context.CancelFunc) { r.shell.Close() }, 0, false, msg.RecIntact},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rigc := make(chan *rig, 1) // the rig, to the recorder's goroutine
			handed := make(chan string, 1)
			endShell := func(ctx context.Context, inner *os.File) error {
				r := <-rigc
				// The shell's own pty, still open.
				dev, err := pty.SlaveDev(inner)
				var st unix.Stat_t
				if err == nil {
					err = unix.Fstat(int(r.shell.Fd()), &st)
				}
				if err != nil || dev != st.Rdev {
					handed <- fmt.Sprintf("not the shell's master: %v", err)
					return nil
				}
				b, _ := os.ReadFile(r.path)
				v, _ := Verify(bytes.NewReader(b), testKey, false)
				// ptystore's end waits for the socket to close: not
				// before the shell's session is ended.
				if c.name != "the terminal hangs up" && peerClosed(r.front) {
					handed <- "the session socket closed before the hand-over"
					return nil
				}
				// The shell writes more than a pty holds: only a drain
				// lets it finish.
				wrote := make(chan error, 1)
				go func() { _, err := r.shell.WriteString(strings.Repeat("late ", 40000)); wrote <- err }()
				select {
				case err := <-wrote:
					if err != nil {
						handed <- "shell write: " + err.Error()
						return nil
					}
				case <-time.After(10 * time.Second):
					handed <- "the shell's writes were not drained"
					return nil
				}
				handed <- v.State
				return nil
			}
			r := newRigWith(t, ctx, false, false, c.max, endShell)
			rigc <- r
			// A read blocked on the outer master would keep it open past
			// Close: the terminal that hangs up reads nothing.
			hangsUp := c.name == "the terminal hangs up"
			var recv chan []byte
			if !hangsUp {
				recv = r.drain()
			}
			r.shell.WriteString("before\n")
			for deadline := time.Now().Add(5 * time.Second); !strings.Contains(events(t, r.path)["o"], "before"); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("output never recorded")
				}
			}
			c.end(r, cancel)
			select {
			case err := <-r.done:
				if c.max == 0 && err != nil && !errors.Is(err, context.Canceled) {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
			select {
			case got := <-handed:
				if !c.handed {
					t.Fatalf("EndShell called (%s) for a shell that exited", got)
				}
				if got != c.state {
					t.Fatalf("at the hand-over: %s, want the recording %s", got, c.state)
				}
			default:
				if c.handed {
					t.Fatal("EndShell not called")
				}
			}
			if !c.handed {
				b, _ := os.ReadFile(r.path)
				if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != c.state {
					t.Fatalf("verify: %+v", v)
				}
			}
			ev := events(t, r.path)
			if strings.Contains(ev["o"], "late") {
				t.Fatal("output after the end seal was recorded")
			}
			if !hangsUp {
				if got := <-recv; strings.Contains(string(got), "late") {
					t.Fatal("output after the end seal reached the terminal")
				}
			}
			// The shell's side is hung up at the end.
			if _, err := r.shell.Read(make([]byte, 10)); err == nil && c.handed {
				t.Fatal("shell's pty still readable after the session ended")
			}
		})
	}
}

func winsize(f *os.File) (string, error) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(int(ws.Col)) + "x" + strconv.Itoa(int(ws.Row)), nil
}

// Ending a session must not wait for the shell to read its input: with
// the shell's input queue full and more typed behind it, a shutdown of
// the socket (ptystore's end) still ends the session at once. Reading the
// socket alone would see the shutdown only after every frame before it,
// each waiting for the shell.
func TestSpliceShutdownWhileInputBlocked(t *testing.T) {
	r := newRig(t, false, false, 0)
	recv := r.drain()
	// The shell reads nothing and is in raw mode (a cooked pty drops
	// what does not fit a line rather than block): a pty takes a few
	// KiB of input, then the recorder's write to it waits.
	tio, err := unix.IoctlGetTermios(int(r.shell.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ICANON | unix.ECHO
	if err := unix.IoctlSetTermios(int(r.shell.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	chunk := strings.Repeat("z", 1000)
	for range 64 {
		r.front.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := r.front.Write(termsock.AppendInput(nil, []byte(chunk))); err != nil {
			break
		}
	}
	if err := unix.Shutdown(int(r.front.Fd()), unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not end while the shell read no input")
	}
	<-recv
	b, _ := os.ReadFile(r.path)
	if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != msg.RecIntact {
		t.Fatalf("verify: %+v", v)
	}
}

// What the terminal side sends is frames; anything else (a compromised
// frontend writing raw bytes, an unknown type, a bad resize) ends the
// session with a message, sealed, and passes nothing on.
func TestSpliceBadFrame(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"raw bytes", []byte("ls\r")},
		{"resize of 3 bytes", []byte{termsock.Resize, 0, 3, 0, 80, 0}},
		{"oversized input", []byte{termsock.Input, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, true, false, 0)
			recv := r.drain()
			r.front.Write(tc.b)
			var got []byte
			select {
			case got = <-recv:
			case <-time.After(5 * time.Second):
				t.Fatal("session not ended")
			}
			if err := <-r.done; !errors.Is(err, termsock.ErrFrame) {
				t.Fatalf("Run = %v, want ErrFrame", err)
			}
			if !strings.Contains(string(got), "invalid frame") {
				t.Fatalf("terminal got %q", got)
			}
			if ev := events(t, r.path); ev["i"] != "" || ev["r"] != "" {
				t.Fatalf("events %v", ev)
			}
			b, _ := os.ReadFile(r.path)
			if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != msg.RecIntact {
				t.Fatalf("verify: %+v", v)
			}
		})
	}
}

// The frontend's side shut down for reading: the shell's next output is
// recorded, cannot be sent, and ends the session, sealed, whether the
// burst is small (written by the recorder itself) or large (by its
// forwarder). The small case hung before the forwarder also stopped when
// the recorder did.
func TestSpliceShutRead(t *testing.T) {
	for _, n := range []int{10, 3 * directMax} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := newRig(t, false, false, 0)
			if err := unix.Shutdown(int(r.front.Fd()), unix.SHUT_RD); err != nil {
				t.Fatal(err)
			}
			r.shell.Write(bytes.Repeat([]byte("x"), n))
			select {
			case err := <-r.done:
				if err != nil {
					t.Fatalf("Run = %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("session not ended")
			}
			b, _ := os.ReadFile(r.path)
			if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != msg.RecIntact {
				t.Fatalf("verify: %+v", v)
			}
			if ev := events(t, r.path); !strings.Contains(ev["o"], "xxxxxxxxxx") {
				t.Fatalf("output not recorded: %v", ev)
			}
		})
	}
}
