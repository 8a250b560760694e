package frontend

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"sluice/frontend/hub"
)

// deadline bounds a test that would otherwise hang on a bug; it is not a
// speed assertion.
const deadline = 20 * time.Second

// settle polls until cond holds or the deadline passes; goroutines that
// are done still take a moment to leave.
func settle(cond func() bool) bool {
	for end := time.Now().Add(deadline); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// An idle attached session costs one goroutine: the connection's reader.
// The pty's reader runs only while there is output (the hub's poller, one
// goroutine for every pty, starts it), its sender only while output waits
// for the socket, and the HTTP server's goroutine for the connection is
// gone.
func TestIdleSessionGoroutines(t *testing.T) {
	const n = 20
	l := startLocal(t, hub.Options{}, func(string) []string {
		return []string{"sh", "-c", "printf 'ready$ '; exec cat"}
	})
	// The shells and the goroutines that reap them exist before counting.
	l.be.ready = make(chan *os.File, n)
	for range n {
		m, cmd, err := l.be.spawn("x")
		if err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		l.be.ready <- m
	}
	before := runtime.NumGoroutine()
	var cs []*wsClient
	for range n {
		c := l.dial(t)
		c.create(t, "x")
		c.until(t, "$ ")
		cs = append(cs, c)
	}
	// The hub's poller came with the first session.
	perSession := func() float64 { return float64(runtime.NumGoroutine()-before-1) / n }
	if !settle(func() bool { return perSession() <= 1 }) {
		t.Fatalf("%.2f goroutines per idle session, want 1", perSession())
	}
	// Output that flowed leaves no sender behind.
	for _, c := range cs {
		c.ws.WriteMessage(websocket.BinaryMessage, []byte("hello\n"))
		c.until(t, "hello")
	}
	if !settle(func() bool { return perSession() <= 1 }) {
		t.Fatalf("%.2f goroutines per session after output, want 1", perSession())
	}
	// Once the shells have ended and the clients gone, so is every
	// goroutine of theirs, and the ones that reaped the shells.
	for _, c := range cs {
		c.ws.WriteMessage(websocket.BinaryMessage, []byte{4}) // EOF to cat
		for {
			if _, exit := c.read(t, true); exit {
				break
			}
		}
		c.ws.Close()
	}
	if !settle(func() bool { return perSession() <= -1 }) {
		t.Fatalf("%.2f goroutines per session left after the end", perSession()+1)
	}
}

// deep uses about n KiB of stack, as a ceremony's JSON, msgpack and
// helper call do.
//
//go:noinline
func deep(n int) byte {
	var b [1000]byte
	b[n%len(b)] = byte(n)
	if n > 0 {
		return deep(n-1) + b[(n*7)%len(b)]
	}
	return b[0]
}

// A ceremony that calls deep does not leave its stack on every signed-in
// connection: the connection's goroutine, parked on its socket for the
// session's life, keeps the stack it grew to until a collection shrinks
// it, and a frontend's first megabytes see none.
func TestCeremonyStackNotKept(t *testing.T) {
	const n = 20
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"true"} })
	var sink atomic.Int64
	l.be.loginHook = func() { sink.Add(int64(deep(12))) }
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		l.dial(t)
	}
	runtime.ReadMemStats(&after)
	// Without the ceremonies aside: 16 KiB and more a connection.
	if per := float64(after.StackInuse-before.StackInuse) / n / 1024; per > 8 {
		t.Fatalf("%.1f KiB of goroutine stacks per signed-in connection, want at most 8", per)
	}
}

// A viewer whose client reads nothing must not hold the session up for
// the others: a write that could block goes to a goroutine of its own,
// never to the pty's reader, and a read-only viewer never paces. The
// write timeout is far beyond the test's deadline so that a stall shows.
func TestStuckViewerDoesNotStallOwner(t *testing.T) {
	const size = 16 << 20
	l := startLocalConfig(t, Config{WriteTimeout: time.Hour}, func(string) []string {
		return []string{"sh", "-c", "stty raw -echo; printf 'go?'; read x; head -c 16777216 /dev/zero | tr '\\0' a; printf END"}
	})
	owner := l.dial(t)
	id := owner.create(t, "x")["session"].(map[string]any)["id"].(string)
	owner.until(t, "go?")

	// The stuck viewer's socket has a tiny receive buffer, so our side
	// of it fills after little output.
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		}}
		return nd.Dial(network, addr)
	}}
	h := http.Header{}
	h.Set("Origin", l.origin)
	ws, _, err := d.Dial(l.ws, h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	stuck := &wsClient{ws: ws}
	stuck.expect(t, "hello")
	stuck.send(t, map[string]any{"t": "login-begin"})
	stuck.expect(t, "login-options")
	stuck.send(t, map[string]any{"t": "login-finish", "assertion": map[string]any{}})
	stuck.expect(t, "signed-in")
	stuck.send(t, map[string]any{"t": "attach", "id": id, "share": "eA"})
	m := stuck.expect(t, "attached")
	if m["mode"] != "read-only" {
		t.Fatalf("joined as %v", m["mode"])
	}
	stuck.att = m["a"].(float64)
	// From here on the stuck client reads nothing, but claims to have
	// processed everything, so the window does not stop its output: only
	// its socket does.
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
			b, _ := json.Marshal(map[string]any{"t": "ack", "a": stuck.att, "n": int64(1) << 40})
			if ws.WriteMessage(websocket.TextMessage, b) != nil {
				return
			}
		}
	}()

	owner.ws.SetReadDeadline(time.Now().Add(deadline))
	owner.ws.WriteMessage(websocket.BinaryMessage, []byte("\n"))
	var tail []byte
	for {
		b, exit := owner.read(t, true)
		if exit {
			break
		}
		tail = append(tail[max(0, len(tail)-16):], b...)
	}
	// "go?" came before the count started.
	if owner.got != 3+size+3 || !strings.HasSuffix(string(tail), "END") {
		t.Fatalf("owner got %d bytes ending %q, want %d ending END", owner.got, tail, 3+size+3)
	}
}
