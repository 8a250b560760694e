package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// Fixed hellos for tests: the rpc package does not care where build IDs
// come from, only that both sides agree.
var (
	tClient = Hello{Intent: "sluice test echo client", BuildID: strings.Repeat("a1", 32)}
	tServer = Hello{Intent: "sluice test echo server", BuildID: strings.Repeat("b2", 32)}
)

type echoReq struct {
	Text string `msgpack:"text"`
}

type echoRep struct {
	Text string `msgpack:"text"`
	UID  uint32 `msgpack:"uid"`
	PID  int32  `msgpack:"pid"`
	FDs  int    `msgpack:"fds"`
}

func echoHandler(ctx context.Context, c *Call) (Reply, error) {
	var req echoReq
	if err := c.Decode(&req); err != nil {
		return Reply{}, err
	}
	c.Label = "echo"
	defer closeFiles(c.FDs)
	if req.Text == "fail" {
		return Reply{}, Errorf("denied", "no %s", req.Text)
	}
	if req.Text == "internal" {
		return Reply{}, errors.New("secret detail")
	}
	if req.Text == "pty" {
		m, err := openPTY()
		if err != nil {
			return Reply{}, err
		}
		return Reply{Body: echoRep{Text: "pty"}, FDs: []*os.File{m}}, nil
	}
	return Reply{Body: echoRep{Text: req.Text, UID: c.Peer.UID, PID: c.Peer.PID, FDs: len(c.FDs)}}, nil
}

func openPTY() (*os.File, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "ptmx"), nil
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testServer struct {
	path string
	srv  *Server
	stop func()
}

func startServer(t testing.TB, mod func(*Server)) *testServer {
	t.Helper()
	return startServerAt(t, filepath.Join(t.TempDir(), "s.sock"), mod)
}

// startServerAt is startServer at a path of the test's choosing.
func startServerAt(t testing.TB, path string, mod ...func(*Server)) *testServer {
	t.Helper()
	l, err := Listen(path, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, path, l, mod...)
}

// serveOn serves the echo route on l until the test ends.
func serveOn(t testing.TB, path string, l *net.UnixListener, mod ...func(*Server)) *testServer {
	t.Helper()
	s := &Server{
		Name: "test",
		Log:  quietLog(),
		Routes: []Route{{
			Client: tClient, Server: tServer, MaxFDs: 1,
			Allow:  Allow{UIDs: []uint32{0, uint32(os.Getuid()), 65534}},
			Handle: echoHandler,
		}},
	}
	for _, m := range mod {
		if m != nil {
			m(s)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	var once sync.Once
	ts := &testServer{path: path, srv: s, stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}}
	t.Cleanup(ts.stop)
	return ts
}

// shareDir lets other uids reach the socket (t.TempDir makes 0700 dirs).
func (ts *testServer) shareDir() {
	d := filepath.Dir(ts.path)
	os.Chmod(d, 0o755)
	os.Chmod(filepath.Dir(d), 0o755)
}

func (ts *testServer) client() *Client {
	return &Client{Path: ts.path, Hello: tClient, Expect: tServer, Timeout: 3 * time.Second}
}

func TestCallOK(t *testing.T) {
	ts := startServer(t, nil)
	var rep echoRep
	if _, err := ts.client().Call(context.Background(), echoReq{Text: "hi"}, nil, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Text != "hi" || rep.UID != uint32(os.Getuid()) || rep.PID != int32(os.Getpid()) {
		t.Fatalf("reply %+v, want hi from uid %d pid %d", rep, os.Getuid(), os.Getpid())
	}
}

func TestHandshakeRefusals(t *testing.T) {
	ts := startServer(t, nil)
	cases := []struct {
		name   string
		hello  Hello
		expect Hello
	}{
		{"unknown intent", Hello{Intent: "sluice test other client", BuildID: tClient.BuildID}, tServer},
		{"wrong client build ID", Hello{Intent: tClient.Intent, BuildID: strings.Repeat("cc", 32)}, tServer},
		{"server intent echoed is not accepted", tServer, tServer},
		{"client expects other server build ID", tClient, Hello{Intent: tServer.Intent, BuildID: strings.Repeat("dd", 32)}},
		{"client expects other server intent", tClient, Hello{Intent: "sluice test else server", BuildID: tServer.BuildID}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{Path: ts.path, Hello: tc.hello, Expect: tc.expect, Timeout: 2 * time.Second}
			_, err := c.Call(context.Background(), echoReq{Text: "x"}, nil, nil)
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("err = %v, want ErrHandshake", err)
			}
			// and the server still serves a good call
			if _, err := ts.client().Call(context.Background(), echoReq{Text: "ok"}, nil, nil); err != nil {
				t.Fatalf("good call after refusal: %v", err)
			}
		})
	}
}

func TestRemoteErrors(t *testing.T) {
	ts := startServer(t, nil)
	_, err := ts.client().Call(context.Background(), echoReq{Text: "fail"}, nil, nil)
	if CodeOf(err) != "denied" || !strings.Contains(err.Error(), "no fail") {
		t.Fatalf("err = %v, want denied: no fail", err)
	}
	_, err = ts.client().Call(context.Background(), echoReq{Text: "internal"}, nil, nil)
	if CodeOf(err) != CodeInternal || strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v, want internal without the detail", err)
	}
	_, err = ts.client().Call(context.Background(), "not a struct", nil, nil)
	if CodeOf(err) != CodeBadRequest {
		t.Fatalf("err = %v, want bad-request", err)
	}
}

// raw dials and returns the connection for hand-made bytes.
func raw(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func hello(h Hello) []byte { return h.appendLines(nil) }

func frame(body []byte) []byte { return appendFrame(nil, body) }

func mp(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// readAll reads until EOF or reset and returns what came.
func readAll(c net.Conn) []byte {
	var buf bytes.Buffer
	b := make([]byte, 4096)
	for {
		n, err := c.Read(b)
		buf.Write(b[:n])
		if err != nil {
			return buf.Bytes()
		}
	}
}

func errorFrameAfterHello(t *testing.T, got []byte) string {
	t.Helper()
	h, n, need, err := ParseHello(got)
	if err != nil || need || h != tServer {
		t.Fatalf("server hello: %q need=%v err=%v", got, need, err)
	}
	ef, _, need, err := ParseFrame(got[n:], 1<<20)
	if err != nil || need {
		t.Fatalf("error frame: %q need=%v err=%v", got[n:], need, err)
	}
	return string(ef)
}

func TestFrameLimits(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.MaxFrame = 1024 })
	// A msgpack string padded to exactly the limit.
	atLimit := mp(echoReq{Text: strings.Repeat("x", 1024-len(mp(echoReq{Text: ""}))-2)})
	if len(atLimit) != 1024 {
		t.Fatalf("test setup: %d bytes", len(atLimit))
	}
	c := raw(t, ts.path)
	c.Write(append(hello(tClient), frame(atLimit)...))
	got := readAll(c)
	if ef := errorFrameAfterHello(t, got); ef != "" {
		t.Fatalf("frame at limit refused: %q", ef)
	}

	for _, l := range []uint32{1025, 1 << 31, 0xffffffff} {
		c := raw(t, ts.path)
		msg := hello(tClient)
		msg = binary.BigEndian.AppendUint32(msg, l)
		c.Write(msg)
		ef := errorFrameAfterHello(t, readAll(c))
		if !strings.HasPrefix(ef, "bad-request: ") || !strings.Contains(ef, "frame too large") {
			t.Fatalf("length %d: error frame %q", l, ef)
		}
	}
}

func TestTruncatedAndTrailing(t *testing.T) {
	calls := 0
	ts := startServer(t, func(s *Server) {
		s.Routes[0].Handle = func(ctx context.Context, c *Call) (Reply, error) {
			calls++
			return echoHandler(ctx, c)
		}
	})
	body := mp(echoReq{Text: "hello"})
	// Cut in the middle of the frame, then half-close: the handler never runs.
	c := raw(t, ts.path)
	full := append(hello(tClient), frame(body)...)
	c.Write(full[:len(full)-3])
	c.CloseWrite()
	got := readAll(c)
	if len(got) != len(hello(tServer)) || !bytes.Equal(got, hello(tServer)) {
		// The server answers its lines once it has to wait for the frame,
		// then closes on the truncation without an answer.
		t.Fatalf("truncated: got %q", got)
	}
	// Cut in the middle of the intent line.
	c = raw(t, ts.path)
	c.Write([]byte("sluice test ec"))
	c.CloseWrite()
	if got := readAll(c); len(got) != 0 {
		t.Fatalf("truncated intent: got %q", got)
	}
	// Bytes after the request frame in the same write.
	c = raw(t, ts.path)
	c.Write(append(full, 0, 0, 0, 1, 0xc0))
	if ef := errorFrameAfterHello(t, readAll(c)); !strings.Contains(ef, "after the request frame") {
		t.Fatalf("trailing: %q", ef)
	}
	if calls != 0 {
		t.Fatalf("handler ran %d times on bad input", calls)
	}
}

func TestNonPipelinedClient(t *testing.T) {
	ts := startServer(t, nil)
	c := raw(t, ts.path)
	c.Write(hello(tClient))
	want := hello(tServer)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("server lines before the request: %q %v", got, err)
	}
	c.Write(frame(mp(echoReq{Text: "later"})))
	rest := readAll(c)
	ef, n, _, err := ParseFrame(rest, 100)
	if err != nil || len(ef) != 0 {
		t.Fatalf("error frame %q %v", ef, err)
	}
	pf, _, _, err := ParseFrame(rest[n:], 1000)
	var rep echoRep
	if err != nil || msgpack.Unmarshal(pf, &rep) != nil || rep.Text != "later" {
		t.Fatalf("payload %q %v", pf, err)
	}
}

func TestSilentClientHitsDeadline(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.Timeout = 200 * time.Millisecond })
	c := raw(t, ts.path)
	c.Write([]byte("sluice"))
	start := time.Now()
	got := readAll(c)
	if len(got) != 0 {
		t.Fatalf("silent client got %q", got)
	}
	// Not a timing assertion: only that the server, not our 5 s deadline, closed it.
	if time.Since(start) > 4*time.Second {
		t.Fatal("server did not cut the silent client off")
	}
	if _, err := ts.client().Call(context.Background(), echoReq{Text: "ok"}, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestBusy(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.MaxConns = 1; s.Timeout = time.Second })
	hold := raw(t, ts.path)
	hold.Write([]byte("sl")) // occupies the only slot
	time.Sleep(50 * time.Millisecond)
	_, err := ts.client().Call(context.Background(), echoReq{Text: "x"}, nil, nil)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("err = %v, want ErrBusy", err)
	}
	hold.Close()
	// The slot frees once the server notices the close.
	var lastErr error
	for i := 0; i < 100; i++ {
		if _, lastErr = ts.client().Call(context.Background(), echoReq{Text: "x"}, nil, nil); lastErr == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("server never freed the slot: %v", lastErr)
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestFDPassing(t *testing.T) {
	ts := startServer(t, nil)
	// A pty master comes back on the reply, and is a real pty.
	var rep echoRep
	fds, err := ts.client().Call(context.Background(), echoReq{Text: "pty"}, nil, &rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 1 {
		t.Fatalf("%d fds", len(fds))
	}
	if _, err := unix.IoctlGetInt(int(fds[0].Fd()), unix.TIOCGPTN); err != nil {
		t.Fatalf("received fd is not a pty master: %v", err)
	}
	fds[0].Close()

	// One fd sent to a route taking one: the handler sees it.
	m, err := openPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := ts.client().Call(context.Background(), echoReq{Text: "one"}, []*os.File{m}, &rep); err != nil || rep.FDs != 1 {
		t.Fatalf("one fd: %v %+v", err, rep)
	}

	// More fds than the call takes: refused, and every one closed.
	before := countFDs(t)
	var many []*os.File
	for i := 0; i < 20; i++ {
		r, w, _ := os.Pipe()
		many = append(many, r)
		defer w.Close()
		defer r.Close()
	}
	base := countFDs(t)
	_, err = ts.client().Call(context.Background(), echoReq{Text: "many"}, many, nil)
	if CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), "20 fds") {
		t.Fatalf("err = %v, want bad-request about 20 fds", err)
	}
	time.Sleep(20 * time.Millisecond)
	// Other tests' connections may still be closing, so the count can only
	// be required not to grow.
	if n := countFDs(t); n > base {
		t.Fatalf("fds leaked: %d before the call, %d after (started at %d)", base, n, before)
	}
}

// The tests below need a second process with another uid, so they need root
// (CI runs as root). The child is this test binary in a helper mode.

const childEnv = "RPC_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		code := m.Run()
		if childExePath != "" {
			os.RemoveAll(filepath.Dir(childExePath))
		}
		os.Exit(code)
	case "call":
		// Call the server as whoever we were started as; print the uid it saw.
		c := &Client{Path: os.Getenv("SOCK"), Hello: tClient, Expect: tServer, Timeout: 3 * time.Second}
		var rep echoRep
		_, err := c.Call(context.Background(), echoReq{Text: "child"}, nil, &rep)
		if err != nil {
			fmt.Println("error:", CodeOf(err), err)
			os.Exit(0)
		}
		fmt.Println("uid:", rep.UID)
		os.Exit(0)
	case "write-frame":
		// fd 3 is a connection someone else made; send the request on it.
		f := os.NewFile(3, "conn")
		f.Write(frame(mp(echoReq{Text: "hijack"})))
		got, _ := io.ReadAll(f)
		fmt.Printf("%q\n", got)
		os.Exit(0)
	case "write-all":
		f := os.NewFile(3, "conn")
		f.Write(append(hello(tClient), frame(mp(echoReq{Text: "hijack"}))...))
		got, _ := io.ReadAll(f)
		fmt.Printf("%q\n", got)
		os.Exit(0)
	case "forge-creds":
		// Try to claim uid 0 in SCM_CREDENTIALS while not root.
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: os.Getenv("SOCK"), Net: "unix"})
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(0)
		}
		oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: 0, Gid: 0})
		_, _, err = c.WriteMsgUnix(hello(tClient), oob, nil)
		fmt.Println("forge:", err)
		os.Exit(0)
	}
	os.Exit(2)
}

var childExePath string

// childExe is a copy of the test binary that other uids can execute (go
// test builds it in a directory only root may enter).
func childExe(t *testing.T) string {
	t.Helper()
	if childExePath != "" {
		return childExePath
	}
	dir, err := os.MkdirTemp("", "rpc-child-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "rpc.test")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	childExePath = p
	return p
}

func runChild(t *testing.T, mode, sock string, uid uint32, extra ...*os.File) string {
	t.Helper()
	cmd := exec.Command(childExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "SOCK="+sock)
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v: %s", mode, err, out)
	}
	return strings.TrimSpace(string(out))
}

func needRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child with another uid (CI runs as root)")
	}
}

func TestCredentialsFromAnotherUID(t *testing.T) {
	needRoot(t)
	ts := startServer(t, nil)
	ts.shareDir()
	if got := runChild(t, "call", ts.path, 65534); got != "uid: 65534" {
		t.Fatalf("server saw %q, want uid: 65534", got)
	}
	// Peer policy: uid 4242 is not allowed.
	if got := runChild(t, "call", ts.path, 4242); !strings.HasPrefix(got, "error: forbidden") {
		t.Fatalf("forbidden uid got %q", got)
	}
}

func TestGroupAllow(t *testing.T) {
	needRoot(t)
	ts := startServer(t, func(s *Server) { s.Routes[0].Allow = Allow{GIDs: []uint32{4343}} })
	ts.shareDir()
	cmd := exec.Command(childExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=call", "SOCK="+ts.path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 5000, Gid: 5000, Groups: []uint32{4343}}}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "uid: 5000" {
		t.Fatalf("supplementary group 4343 not honoured: %s %v", out, err)
	}
	if got := runChild(t, "call", ts.path, 5001); !strings.HasPrefix(got, "error: forbidden") {
		t.Fatalf("no group got %q", got)
	}
}

func TestHandedOverConnectionRefused(t *testing.T) {
	needRoot(t)
	ts := startServer(t, nil)
	c := raw(t, ts.path)
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// We connected and sent the handshake; a process of another uid sends
	// the request on our connection. The server must not serve it.
	c.Write(hello(tClient))
	got := runChild(t, "write-frame", ts.path, 65534, f)
	if strings.Contains(got, "hijack") || strings.Contains(got, `\x00\x00\x00\x00`) {
		t.Fatalf("handed-over connection was served: %s", got)
	}
	// and when the other process does everything on our connection:
	c2 := raw(t, ts.path)
	f2, _ := c2.File()
	defer f2.Close()
	c2.Close()
	cmd := exec.Command(childExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=write-all")
	cmd.ExtraFiles = []*os.File{f2}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if strings.Contains(string(out), "hijack") || len(strings.TrimSpace(string(out))) > 2 {
		t.Fatalf("connection used by another process was answered: %s", out)
	}
	if _, err := ts.client().Call(context.Background(), echoReq{Text: "ok"}, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestForgedCredentialsRefusedByKernel(t *testing.T) {
	needRoot(t)
	ts := startServer(t, nil)
	ts.shareDir()
	got := runChild(t, "forge-creds", ts.path, 65534)
	if !strings.Contains(got, "operation not permitted") {
		t.Fatalf("forged SCM_CREDENTIALS: %q, want EPERM from the kernel", got)
	}
}

func TestParseHelloLimits(t *testing.T) {
	long := strings.Repeat("i", 300)
	cases := []struct {
		in   string
		need bool
		bad  bool
	}{
		{"", true, false},
		{"sluice x", true, false},
		{long, false, true},
		{"sluice x\n" + strings.Repeat("a", 64), true, false},
		{"sluice x\n" + strings.Repeat("A", 64) + "\n", false, true},
		{"sluice x\n" + strings.Repeat("a", 63) + "\n", false, true},
		{"sluice x\n" + strings.Repeat("a", 65) + "\n", false, true},
		{"sluice\tx\n" + strings.Repeat("a", 64) + "\n", false, true},
		{"\n" + strings.Repeat("a", 64) + "\n", false, true},
		{"sluice x\n" + strings.Repeat("a", 64) + "\n", false, false},
	}
	for _, tc := range cases {
		_, _, need, err := ParseHello([]byte(tc.in))
		if need != tc.need || (err != nil) != tc.bad {
			t.Errorf("ParseHello(%.40q) need=%v err=%v, want need=%v bad=%v", tc.in, need, err, tc.need, tc.bad)
		}
	}
}
