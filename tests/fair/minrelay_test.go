package fair

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/internal/pty"
)

// minRelayEnv makes a child copy of this test binary the minimal relay.
const minRelayEnv = "SLUICE_FAIR_MINRELAY"

// serveMinRelay is the cheapest web terminal there is, the floor of any
// WebSocket design on this machine: a Go (gorilla/websocket) server that
// runs the script it is given on a fresh pty and relays bytes both ways,
// one goroutine each, with no sign-in, no flow control, no helpers and
// no scrollback. It prints its address and ends when its stdin closes.
func serveMinRelay() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		bufio.NewReader(os.Stdin).ReadByte()
		l.Close()
	}()
	fmt.Printf("ws://%s/\n", l.Addr())
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 64 << 10}
	err = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		m, s, err := pty.Open()
		if err != nil {
			return
		}
		defer m.Close()
		pty.SetSize(m, 40, 120)
		cmd := exec.Command("sh", "-c", r.URL.Query().Get("script"))
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		err = cmd.Start()
		s.Close()
		if err != nil {
			return
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := m.Read(buf)
				if err != nil {
					ws.Close()
					return
				}
				if ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					return
				}
			}
		}()
		for {
			_, p, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if _, err := m.Write(p); err != nil {
				return
			}
		}
	}))
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// startMinRelay runs serveMinRelay in a child copy of this test binary,
// in a session of its own as every server here, and returns its URL and
// process ID.
func startMinRelay(tb testing.TB) (string, int) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), minRelayEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = daemon()
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { in.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ws://") {
		tb.Fatalf("minimal relay: %q %v", line, err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid
}

// minPage is a client of the minimal relay: one goroutine, a blocking
// read per frame, no acknowledgements (the relay has no flow control).
type minPage struct{ ws *websocket.Conn }

// dialMinRelay starts script on a fresh pty of the relay at url and
// waits for it to print RDY.
func dialMinRelay(tb testing.TB, base, script string) *minPage {
	tb.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(base+"?script="+url.QueryEscape(script), nil)
	if err != nil {
		tb.Fatal(err)
	}
	p := &minPage{ws: ws}
	var got []byte
	for !strings.Contains(string(got), "RDY") {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			tb.Fatalf("minimal relay: %v after %q", err, got)
		}
		got = append(got, b...)
	}
	ws.SetReadDeadline(time.Time{})
	return p
}

func (p *minPage) Close() { p.ws.Close() }

// echo is one key, timed until its echo arrives.
func (p *minPage) echo() (time.Duration, error) {
	t := time.Now()
	if err := p.ws.WriteMessage(websocket.BinaryMessage, []byte("k")); err != nil {
		return 0, err
	}
	_, _, err := p.ws.ReadMessage()
	return time.Since(t), err
}

// cat is PageCat's figure on the relay: the key that starts the cat, to
// its size-th byte.
func (p *minPage) cat(size int) (time.Duration, error) {
	t := time.Now()
	if err := p.ws.WriteMessage(websocket.BinaryMessage, []byte("g")); err != nil {
		return 0, err
	}
	n := 0
	for n < size {
		_, r, err := p.ws.NextReader()
		if err != nil {
			return 0, fmt.Errorf("%d bytes: %w", n, err)
		}
		k, err := io.Copy(io.Discard, r)
		n += int(k)
		if err != nil {
			return 0, fmt.Errorf("%d bytes: %w", n, err)
		}
	}
	return time.Since(t), nil
}
