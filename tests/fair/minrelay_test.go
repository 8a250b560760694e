package fair

import (
	"bufio"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/internal/pty"
)

// minRelayEnv makes a child copy of this test binary the minimal relay
// and holds the script it runs for each connection; minRelayPathEnv is
// the secret path it serves on. The relay runs as root on a port any
// local user can reach, so it runs only the script it was started with,
// and only for a client that knows the path.
const (
	minRelayEnv     = "SLUICE_FAIR_MINRELAY"
	minRelayPathEnv = "SLUICE_FAIR_MINRELAY_PATH"
)

// serveMinRelay is the cheapest web terminal there is, the floor of any
// WebSocket design on this machine: a Go (gorilla/websocket) server that
// runs the script it is given on a fresh pty and relays bytes both ways,
// one goroutine each, with no sign-in, no flow control, no helpers and
// no scrollback. It prints its address and ends when its stdin closes.
func serveMinRelay(script, path string) error {
	if script == "" || len(path) < 32 {
		return errors.New("no script or no secret path")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		bufio.NewReader(os.Stdin).ReadByte()
		l.Close()
	}()
	fmt.Printf("ws://%s\n", l.Addr())
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 64 << 10}
	err = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.URL.Path), []byte(path)) != 1 {
			http.NotFound(w, r)
			return
		}
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
		cmd := exec.Command("sh", "-c", script)
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

// startMinRelay runs serveMinRelay with script in a child copy of this
// test binary, in a session of its own as every server here, and returns
// its URL and process ID.
func startMinRelay(tb testing.TB, script string) (string, int) {
	tb.Helper()
	secret := make([]byte, 16)
	rand.Read(secret)
	path := "/" + hex.EncodeToString(secret)
	line, pid := startChild(tb, "minimal relay", minRelayEnv+"="+script, minRelayPathEnv+"="+path)
	if !strings.HasPrefix(line, "ws://") {
		tb.Fatalf("minimal relay: %q", line)
	}
	return line + path, pid
}

// minPage is a client of the minimal relay: one goroutine, a blocking
// read per frame, no acknowledgements (the relay has no flow control).
type minPage struct{ ws *websocket.Conn }

// dialMinRelay starts the relay's script on a fresh pty of the relay at
// url and waits for it to print RDY.
func dialMinRelay(tb testing.TB, url string) *minPage {
	tb.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
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

// The relay runs as root on a port any local user can reach while the
// benchmarks run: a client without its secret path gets nothing, and
// none can choose what it runs (its first version ran the script in the
// URL's query for anyone).
func TestMinRelayRunsOnlyItsScript(t *testing.T) {
	u, _ := startMinRelay(t, `printf 'R%sY' D; exec cat`)
	base := u[:strings.LastIndex(u, "/")]
	ran := filepath.Join(t.TempDir(), "ran")
	injected := "?script=" + url.QueryEscape("touch "+ran)
	for _, stranger := range []string{base + "/", base + "/" + injected, base + "/x" + u[len(base)+1:]} {
		ws, resp, err := websocket.DefaultDialer.Dial(stranger, nil)
		if err == nil {
			ws.Close()
			t.Errorf("%s: connected without the secret path", stranger)
		} else if resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %v, want 404", stranger, err)
		}
	}
	// With the path, a script in the query is not what runs.
	p := dialMinRelay(t, u+injected)
	p.Close()
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(ran); err == nil {
		t.Error("the relay ran the client's script")
	}
}
