package frontend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
	"sluice/frontend/internal/ptyutil"
	"sluice/msg"
)

// localBackend stands in for the helpers in benchmarks and in the tests
// of the HTTP layer: anyone "signs in", and a new session is argv run on a
// fresh pty by this process. The data path under test (pty, hub,
// WebSocket) is the real one; the helpers are not on it.
type localBackend struct {
	argv  func(user string) []string
	ready chan *os.File // if set, sessions take pre-made ptys from here
	mu    sync.Mutex
	procs []*exec.Cmd
	n     atomic.Int64

	// targets is what AllowedTargets answers (targetsErr, if set, is
	// its error instead); targetsAsked, the grants it was asked with.
	// loginHook, if set, runs in LoginFinish, as the real helper
	// call's depth does.
	loginHook func()

	targets      msg.AllowedTargetsReply
	targetsErr   error
	targetsAsked []msg.Grant
}

func (l *localBackend) RegisterBegin(context.Context, msg.RegisterBegin) (msg.RegisterBeginReply, error) {
	return msg.RegisterBeginReply{}, errors.New("local backend: no registration")
}

func (l *localBackend) RegisterFinish(context.Context, msg.RegisterFinish) (msg.RegisterFinishReply, error) {
	return msg.RegisterFinishReply{}, errors.New("local backend: no registration")
}

func (l *localBackend) LoginBegin(context.Context, msg.LoginBegin) (msg.LoginBeginReply, error) {
	return msg.LoginBeginReply{Options: []byte(`{}`), State: []byte("s")}, nil
}

func (l *localBackend) LoginFinish(context.Context, msg.LoginFinish) (msg.LoginFinishReply, error) {
	if l.loginHook != nil {
		l.loginHook()
	}
	return msg.LoginFinishReply{Grant: msg.Grant{User: "bench", Expires: time.Now().Add(time.Hour).UnixMilli()}}, nil
}

func (l *localBackend) CreateShellSession(ctx context.Context, a msg.CreateShellSession) (msg.CreateShellSessionReply, *os.File, error) {
	id := fmt.Sprintf("local-%d", l.n.Add(1))
	if l.ready != nil {
		m := <-l.ready
		return msg.CreateShellSessionReply{Session: msg.SessionInfo{ID: id, Owner: a.Grant.User, UnixUser: a.User, Machine: msg.HostMachine}}, m, nil
	}
	m, cmd, err := l.spawn(a.User)
	if err != nil {
		return msg.CreateShellSessionReply{}, nil, err
	}
	go cmd.Wait()
	return msg.CreateShellSessionReply{Session: msg.SessionInfo{ID: id, Owner: a.Grant.User, UnixUser: a.User, Machine: msg.HostMachine}}, m, nil
}

func (l *localBackend) AllowedTargets(_ context.Context, a msg.AllowedTargets) (msg.AllowedTargetsReply, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.targetsAsked = append(l.targetsAsked, a.Grant)
	return l.targets, l.targetsErr
}

func (l *localBackend) spawn(user string) (*os.File, *exec.Cmd, error) {
	argv := l.argv(user)
	m, cmd, err := ptyutil.Command(80, 24, argv[0], argv[1:]...)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	return m, cmd, nil
}

// PtyGet lets anyone join a session the hub streams already, read-only
// with a share token; the hub keeps its own pty and closes the stand-in.
func (l *localBackend) PtyGet(_ context.Context, a msg.PtyGet) (msg.PtyGetReply, *os.File, error) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return msg.PtyGetReply{}, nil, err
	}
	mode := msg.ModeOwner
	if len(a.ShareToken) > 0 {
		mode = msg.ShareReadOnly
	}
	return msg.PtyGetReply{Session: msg.SessionInfo{ID: a.ID, Machine: msg.HostMachine}, Mode: mode}, f, nil
}

func (l *localBackend) PtyList(context.Context, msg.PtyList) (msg.PtyListReply, error) {
	return msg.PtyListReply{}, nil
}

func (l *localBackend) PtyDrop(context.Context, msg.PtyDrop) error { return nil }

func (l *localBackend) PtyShare(context.Context, msg.PtyShare) (msg.PtyShareReply, error) {
	return msg.PtyShareReply{}, nil
}

func (l *localBackend) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.procs {
		p.Process.Kill()
	}
}

// local is a frontend on a loopback port over a localBackend.
type local struct {
	srv    *Server
	hs     *http.Server
	be     *localBackend
	origin string
	ws     string
	base   string
}

func startLocal(tb testing.TB, opt hub.Options, argv func(user string) []string) *local {
	tb.Helper()
	return startLocalConfig(tb, Config{Hub: opt}, argv)
}

// startLocalConfig is startLocal with more of the Config; Origins is
// filled in, and Backend unless set (l.be is then unused by the server).
func startLocalConfig(tb testing.TB, cfg Config, argv func(user string) []string) *local {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	l := &local{be: &localBackend{argv: argv}, origin: fmt.Sprintf("http://localhost:%d", port)}
	l.ws = fmt.Sprintf("ws://127.0.0.1:%d/ws", port)
	l.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg.Origins = []string{l.origin}
	if cfg.Backend == nil {
		cfg.Backend = l.be
	}
	if _, bench := tb.(*testing.B); bench && cfg.Log == nil {
		// A line per session would bury the figures.
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	l.srv, err = New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	l.hs = &http.Server{Handler: l.srv}
	var sl net.Listener = ln
	if cfg.Gate != nil {
		sl = cfg.Gate.Listen(ln)
	}
	go l.hs.Serve(sl)
	tb.Cleanup(func() {
		l.hs.Close()
		l.srv.Close()
		l.be.stop()
	})
	return l
}

// wsClient is a minimal page: it signs in, creates a session and reads.
type wsClient struct {
	ws    *websocket.Conn
	att   float64
	got   int64
	acked int64
	// ackEvery is a quarter of the window "attached" announced: the page
	// acknowledges that often, or whenever it has caught up.
	ackEvery int64
	buf      []byte
	ackBuf   []byte
}

// readWait bounds every read of the test client, so a message that never
// comes fails the test instead of hanging it; nothing measures against it.
const readWait = 30 * time.Second

// deadline arms the read deadline for the next message.
func (c *wsClient) deadline() { c.ws.SetReadDeadline(time.Now().Add(readWait)) }

func (l *local) dial(tb testing.TB) *wsClient {
	tb.Helper()
	h := http.Header{}
	h.Set("Origin", l.origin)
	ws, _, err := websocket.DefaultDialer.Dial(l.ws, h)
	if err != nil {
		tb.Fatal(err)
	}
	c := &wsClient{ws: ws}
	c.expect(tb, "hello")
	c.send(tb, map[string]any{"t": "login-begin"})
	c.expect(tb, "login-options")
	c.send(tb, map[string]any{"t": "login-finish", "assertion": map[string]any{}})
	c.expect(tb, "signed-in")
	return c
}

func (c *wsClient) send(tb testing.TB, m map[string]any) {
	b, _ := json.Marshal(m)
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		tb.Fatal(err)
	}
}

func (c *wsClient) expect(tb testing.TB, typ string) map[string]any {
	tb.Helper()
	for {
		c.deadline()
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			tb.Fatalf("waiting for %q: %v", typ, err)
		}
		if mt != websocket.TextMessage {
			continue
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		if m["t"] == typ {
			return m
		}
		if m["t"] == "error" {
			tb.Fatalf("waiting for %q: %v", typ, m)
		}
	}
}

func (c *wsClient) create(tb testing.TB, user string) map[string]any {
	tb.Helper()
	c.send(tb, map[string]any{"t": "create", "user": user, "cols": 80, "rows": 24})
	first := c.att == 0
	for {
		c.deadline()
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			tb.Fatalf("waiting for attached: %v", err)
		}
		if mt != websocket.TextMessage {
			if first {
				tb.Fatalf("output before attached: %q", data)
			}
			continue
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		switch m["t"] {
		case "attached":
			c.att = m["a"].(float64)
			c.got, c.acked = 0, 0
			c.ackEvery = 16 << 10
			if w, ok := m["window"].(float64); ok && w >= 4 {
				c.ackEvery = int64(w) / 4
			}
			return m
		case "error":
			tb.Fatalf("waiting for attached: %v", m)
		}
	}
}

// read returns the next pty bytes (acknowledging them as the page does, in
// quarters of the window) or, with exit set,
// the end of the session.
func (c *wsClient) read(tb testing.TB, ack bool) (data []byte, exit bool) {
	for {
		mt, b, err := c.readMessage()
		if err != nil {
			tb.Fatalf("read: %v", err)
		}
		if mt == websocket.BinaryMessage {
			c.got += int64(len(b))
			if ack && (c.got-c.acked >= c.ackEvery || len(b) < 4096) {
				c.ack(tb)
			}
			return b, false
		}
		if strings.Contains(string(b), `"t":"exit"`) {
			return nil, true
		}
		if strings.Contains(string(b), `"t":"error"`) {
			tb.Fatalf("error from the frontend: %s", b)
		}
	}
}

// readMessage is ws.ReadMessage into the client's own buffer; the bytes
// it returns are valid until the next read. A browser's copying is not
// the server's cost, and ReadMessage's allocations (and the GC they bring)
// would load the same two cores the server runs on.
func (c *wsClient) readMessage() (int, []byte, error) {
	c.deadline()
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return 0, nil, err
	}
	c.buf = c.buf[:0]
	for {
		if len(c.buf) == cap(c.buf) {
			c.buf = append(c.buf, 0)[:len(c.buf)]
		}
		n, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+n]
		if err == io.EOF {
			return mt, c.buf, nil
		}
		if err != nil {
			return 0, nil, err
		}
	}
}

func (c *wsClient) ack(tb testing.TB) {
	// By hand rather than through json: the benchmarks' client shares the
	// cores and the heap with the server it measures.
	b := append(c.ackBuf[:0], `{"t":"ack","a":`...)
	b = strconv.AppendInt(b, int64(c.att), 10)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, c.got, 10)
	c.ackBuf = append(b, '}')
	if err := c.ws.WriteMessage(websocket.TextMessage, c.ackBuf); err != nil {
		tb.Fatal(err)
	}
	c.acked = c.got
}

func (c *wsClient) until(tb testing.TB, want string) string {
	tb.Helper()
	var seen strings.Builder
	for !strings.Contains(seen.String(), want) {
		b, exit := c.read(tb, true)
		if exit {
			tb.Fatalf("session ended before %q; got %q", want, seen.String())
		}
		seen.Write(b)
	}
	return seen.String()
}
