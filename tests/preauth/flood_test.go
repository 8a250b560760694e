// Package preauth floods the real frontend, under the real `sluice run`,
// with idle connections that never sign in, and checks that another
// client can still load the page, sign in and type.
package preauth

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	"golang.org/x/sys/unix"

	"sluice/tests/harness"
	"sluice/tests/softauthn"
)

const policyFile = `allow alice as root on .host
deny * as * on *
`

const (
	// flood is the figure: WebSocket upgrade requests that never
	// sign in. Raw TCP that never sends a byte does not show the issue
	// here: the HTTP server's header timeout closes it after 10 s, sooner
	// than this machine opens 20,000 (with one in twenty raw, main held
	// 19,000 upgraded sockets and still served the page); an upgraded
	// socket was held for good. frontend/admit's tests cover raw sockets
	// at the caps. The flood is opened by
	// floodProcs child processes (this test binary again, as
	// TestFloodWorker): one process cannot hold 20,000 sockets under this
	// machine's RLIMIT_NOFILE (20000 soft and hard, and raising the hard
	// limit is not permitted here even to root), while the frontend gets
	// the same 20000 and must turn the flood away itself.
	flood      = 20000
	floodProcs = 2
	// wait bounds every step so that a bug fails the test instead of
	// hanging it; nothing asserts on how long anything took.
	wait = 60 * time.Second
)

// TestIdleFloodLeavesRoomForOthers: 20,000 idle sockets from 127.0.0.1
// while a client from 127.0.0.2 loads the page, signs in and types. On
// main before issue 12 the frontend ran out of fds (accept4: too many
// open files) and the second client's page never loaded.
func TestIdleFloodLeavesRoomForOthers(t *testing.T) {
	s, err := harness.StartFreshRoot(policyFile)
	t.Cleanup(s.Stop)
	if err != nil {
		s.DumpLogs(os.Stderr)
		t.Fatal(err)
	}
	host := strings.TrimPrefix(s.URL, "http://")
	if lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", s.FrontendPID())); err == nil {
		for _, l := range strings.Split(string(lim), "\n") {
			if strings.HasPrefix(l, "Max open files") {
				t.Logf("frontend: %s", strings.Join(strings.Fields(l), " "))
			}
		}
	}

	// Alice enrolls before the flood; signing in is what is tested.
	alice := softauthn.New("localhost", s.Origin)
	token, _, err := s.Enroll("alice")
	if err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, s, "127.0.0.2")
	c.register(alice, token)
	c.ws.Close()

	var workers []*worker
	for range floodProcs {
		w := startWorker(t, host, s.Origin, flood/floodProcs)
		defer w.stop()
		workers = append(workers, w)
	}
	for _, w := range workers {
		t.Logf("flood worker: %s", w.ready(t))
	}

	// Another client, while every flood socket is held open.
	start := time.Now()
	hc := &http.Client{Timeout: wait, Transport: &http.Transport{DialContext: dialerFrom("127.0.0.2").DialContext}}
	resp, err := hc.Get(s.URL + "/")
	if err != nil {
		s.DumpLogs(os.Stderr)
		t.Fatalf("loading the page during the flood: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("<html")) {
		t.Fatalf("the page during the flood: %d %q", resp.StatusCode, body[:min(len(body), 200)])
	}
	loaded := time.Since(start)
	c = dialWS(t, s, "127.0.0.2")
	c.signIn(alice)
	c.send(map[string]any{"t": "create", "machine": ".host", "user": "root", "cols": 80, "rows": 24})
	c.expect("attached")
	c.typeText("echo flood-$((6*7))\r")
	c.until("flood-42")
	t.Logf("during the flood: page loaded in %v, signed in and typed by %v", loaded, time.Since(start))

	refused := 0
	for _, w := range workers {
		o := w.stop()
		t.Logf("flood worker: %s", o)
		var r, u, h int
		fmt.Sscanf(o, "refused %d upgraded %d held %d", &r, &u, &h)
		refused += r
	}
	if refused == 0 {
		t.Fatal("no flood socket was answered 503: the caps did not act")
	}
	if strings.Contains(s.Run.Log.String(), "too many open files") {
		t.Fatal("the frontend ran out of fds")
	}
}

// worker is a child process holding part of the flood.
type worker struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	final string
}

func startWorker(t *testing.T, host, origin string, n int) *worker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodWorker$", "-test.v=false")
	cmd.Env = append(os.Environ(), "SLUICE_FLOOD_HOST="+host, "SLUICE_FLOOD_ORIGIN="+origin, fmt.Sprintf("SLUICE_FLOOD_N=%d", n))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &worker{cmd: cmd, in: in, out: bufio.NewReader(out)}
}

// line is the worker's next report line.
func (w *worker) line() string {
	for {
		l, err := w.out.ReadString('\n')
		if strings.HasPrefix(l, "flood: ") {
			return strings.TrimSpace(strings.TrimPrefix(l, "flood: "))
		}
		if err != nil {
			return "worker ended: " + err.Error()
		}
	}
}

func (w *worker) ready(t *testing.T) string {
	l := w.line()
	if !strings.HasPrefix(l, "opened") {
		t.Fatalf("flood worker: %s", l)
	}
	return l
}

// stop lets the worker count what its sockets got, close them and exit.
func (w *worker) stop() string {
	if w.cmd == nil {
		return w.final
	}
	w.in.Close()
	w.final = w.line()
	w.cmd.Wait()
	w.cmd = nil
	return w.final
}

// TestFloodWorker is the flood's child process; it does nothing unless
// started by TestIdleFloodLeavesRoomForOthers. It opens its sockets,
// says so, holds them until its stdin closes (or wait twice over, so it
// stops by itself), then reports what they got and exits.
func TestFloodWorker(t *testing.T) {
	host := os.Getenv("SLUICE_FLOOD_HOST")
	if host == "" {
		t.Skip("only as a child of TestIdleFloodLeavesRoomForOthers")
	}
	n, _ := strconv.Atoi(os.Getenv("SLUICE_FLOOD_N"))
	f := startFlood(host, os.Getenv("SLUICE_FLOOD_ORIGIN"), n)
	<-f.done
	fmt.Printf("flood: opened %d sockets from 127.0.0.1 in %v, %d dials failed\n", f.opened.Load(), f.took.Round(time.Millisecond), f.failed.Load())
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(4 * wait):
	}
	r, u, h := f.outcomes()
	fmt.Printf("flood: refused %d upgraded %d held %d (503, 101, neither)\n", r, u, h)
	f.stop()
}

func dialerFrom(src string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: wait}
}

// floodRun opens the sockets from 127.0.0.1 with a few workers, stops on
// its own after n sockets or twice `wait`, and holds them until stop.
type floodRun struct {
	mu     sync.Mutex
	conns  []*net.TCPConn
	opened atomic.Int64
	failed atomic.Int64
	done   chan struct{}
	took   time.Duration
	cancel context.CancelFunc
}

func startFlood(host, origin string, n int) *floodRun {
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	f := &floodRun{done: make(chan struct{}), cancel: cancel}
	upgrade := []byte(fmt.Sprintf("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: %s\r\n\r\n", host, origin))
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	d := dialerFrom("127.0.0.1")
	d.Timeout = 5 * time.Second
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				nc, err := d.DialContext(ctx, "tcp", host)
				if err != nil {
					f.failed.Add(1)
					continue
				}
				tc := nc.(*net.TCPConn)
				tc.Write(upgrade)
				f.mu.Lock()
				f.conns = append(f.conns, tc)
				f.mu.Unlock()
				f.opened.Add(1)
			}
		}()
	}
	go func() {
		wg.Wait()
		f.took = time.Since(start)
		close(f.done)
	}()
	return f
}

// outcomes reads, without waiting, what each flood socket got so far.
func (f *floodRun) outcomes() (refused, upgraded, held int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	buf := make([]byte, 64)
	for _, c := range f.conns {
		rc, err := c.SyscallConn()
		if err != nil {
			continue
		}
		n := 0
		rc.Control(func(fd uintptr) {
			n, _, _ = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_PEEK)
		})
		switch b := buf[:max(n, 0)]; {
		case bytes.HasPrefix(b, []byte("HTTP/1.1 503")):
			refused++
		case bytes.HasPrefix(b, []byte("HTTP/1.1 101")):
			upgraded++
		default:
			held++
		}
	}
	return
}

func (f *floodRun) stop() {
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// client is a minimal page: control messages and pty output over one
// WebSocket, acknowledging output as it reads it.
type client struct {
	t    *testing.T
	ws   *websocket.Conn
	wmu  sync.Mutex
	msgs chan map[string]any
	out  chan []byte
	buf  bytes.Buffer
}

func dialWS(t *testing.T, s *harness.Suite, src string) *client {
	t.Helper()
	d := websocket.Dialer{NetDialContext: dialerFrom(src).DialContext, HandshakeTimeout: wait}
	h := http.Header{}
	h.Set("Origin", s.Origin)
	ws, resp, err := d.Dial(s.WSURL, h)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("websocket from %s: %v (HTTP %d)", src, err, code)
	}
	t.Cleanup(func() { ws.Close() })
	c := &client{t: t, ws: ws, msgs: make(chan map[string]any, 64), out: make(chan []byte, 256)}
	go c.read()
	c.expect("hello")
	return c
}

func (c *client) read() {
	defer close(c.msgs)
	var a float64
	var total int64
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if typ == websocket.BinaryMessage {
			total += int64(len(data))
			c.send(map[string]any{"t": "ack", "a": a, "n": total})
			c.out <- data
			continue
		}
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if m["t"] == "attached" {
			a, total = m["a"].(float64), 0
		}
		c.msgs <- m
	}
}

func (c *client) send(m map[string]any) {
	b, _ := json.Marshal(m)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *client) typeText(s string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.WriteMessage(websocket.BinaryMessage, []byte(s))
}

func (c *client) expect(typ string) map[string]any {
	c.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				c.t.Fatalf("connection closed waiting for %q", typ)
			}
			if m["t"] == typ {
				return m
			}
			if m["t"] == "error" {
				c.t.Fatalf("waiting for %q: %v", typ, m)
			}
		case <-timeout:
			c.t.Fatalf("no %q from the frontend", typ)
		}
	}
}

func (c *client) until(want string) {
	c.t.Helper()
	timeout := time.After(wait)
	for !strings.Contains(c.buf.String(), want) {
		select {
		case b := <-c.out:
			c.buf.Write(b)
		case <-timeout:
			c.t.Fatalf("no %q in the output; got %q", want, c.buf.String())
		}
	}
}

func (c *client) register(a *softauthn.Authenticator, token string) {
	c.t.Helper()
	c.send(map[string]any{"t": "register-begin", "token": token})
	opts, _ := json.Marshal(c.expect("register-options")["options"])
	cred, err := a.Register(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(map[string]any{"t": "register-finish", "credential": json.RawMessage(cred)})
	c.expect("registered")
}

func (c *client) signIn(a *softauthn.Authenticator) {
	c.t.Helper()
	c.send(map[string]any{"t": "login-begin"})
	opts, _ := json.Marshal(c.expect("login-options")["options"])
	as, err := a.Login(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(map[string]any{"t": "login-finish", "assertion": json.RawMessage(as)})
	c.expect("signed-in")
}
