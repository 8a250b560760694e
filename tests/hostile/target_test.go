package hostile

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/grant"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/rpc/rpctest"
	"sluice/suite"
)

// target is one socket under attack and what a legitimate call to it
// looks like.
type target struct {
	name     string
	sock     string
	pid      string // "self", or the helper's pid
	client   Hello  // lines a legitimate caller sends
	server   Hello  // lines the server answers with
	other    Hello  // valid lines of a protocol this socket does not serve
	maxFrame int
	maxFDs   int // fds the attacked route takes
	maxConns int
	timeout  time.Duration // the server's per-call deadline

	good   []byte                        // request body with a known answer
	goodOK func(r Reply, a Answer) error // checks that answer

	// ptyPut, when set, is a request body whose call expects one pty
	// master; ptyWrong is the error frame prefix for any other fd.
	ptyPut   []byte
	ptyWrong string
	// putClient and putServer, when set, are the hellos of that call's
	// protocol, if not client's and server's (ptystore: policy puts).
	putClient, putServer Hello
}

// putHellos are the hellos of tg's pty-taking call.
func (tg *target) putHellos() (Hello, Hello) {
	if tg.putClient.Intent != "" {
		return tg.putClient, tg.putServer
	}
	return tg.client, tg.server
}

// request encodes a msg.Request.
func request(op string, args any) []byte {
	a, err := msgpack.Marshal(args)
	if err != nil {
		panic(err)
	}
	b, err := msgpack.Marshal(msg.Request{Op: op, Args: a})
	if err != nil {
		panic(err)
	}
	return b
}

func mp(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// exchange makes one call and parses the answer; received fds are closed.
func (tg *target) exchange(t testing.TB, req []byte) (Reply, Answer) {
	t.Helper()
	a, err := Exchange(tg.sock, req)
	if err != nil {
		t.Fatalf("%s: %v", tg.name, err)
	}
	a.CloseFDs()
	return a.Parse(), a
}

// goodCall is the legitimate request, whole.
func (tg *target) goodCall() []byte { return Cat(tg.client.Lines(), Frame(tg.good)) }

// checkGood checks an answer to the legitimate request.
func (tg *target) checkGood(r Reply, a Answer) error {
	if r.Kind != Closed && r.Kind != Busy && r.Server != tg.server {
		return fmt.Errorf("server lines %+v, want %+v", r.Server, tg.server)
	}
	return tg.goodOK(r, a)
}

// mustServeGood: right after an attack the server still serves.
func (tg *target) mustServeGood(t testing.TB) {
	t.Helper()
	a, err := Exchange(tg.sock, tg.goodCall())
	if err != nil {
		t.Fatalf("good call after the attack: %v", err)
	}
	defer a.CloseFDs()
	if err := tg.checkGood(a.Parse(), a); err != nil {
		t.Fatalf("good call after the attack: %v", err)
	}
}

func wantOK(fds int) func(Reply, Answer) error {
	return func(r Reply, a Answer) error {
		if r.Kind != OK {
			return fmt.Errorf("got %v, want a payload", r)
		}
		if len(a.FDs) != fds {
			return fmt.Errorf("%d fds with the payload, want %d", len(a.FDs), fds)
		}
		return nil
	}
}

func wantCode(code string) func(Reply, Answer) error {
	return func(r Reply, a Answer) error {
		if r.Kind != ErrorKind || r.Code != code {
			return fmt.Errorf("got %v, want a %q error frame", r, code)
		}
		return nil
	}
}

// --- the in-process server -------------------------------------------------

var (
	inClient    = Hello{"sluice test hostile client", strings.Repeat("c1", 32)}
	inServer    = Hello{"sluice test hostile server", strings.Repeat("5e", 32)}
	inPtyClient = Hello{"sluice test hostile pty client", strings.Repeat("c2", 32)}
	inPtyServer = Hello{"sluice test hostile pty server", strings.Repeat("5f", 32)}
	inOther     = Hello{"sluice test other client", strings.Repeat("c3", 32)}
)

func rpcHello(h Hello) rpc.Hello { return rpc.Hello{Intent: h.Intent, BuildID: h.BuildID} }

// inHandler answers "echo", and "put", which wants one pty master.
func inHandler(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	defer func() {
		for _, f := range c.FDs {
			f.Close()
		}
	}()
	var req msg.Request
	if err := c.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	c.Label = req.Op
	switch req.Op {
	case "echo":
		return rpc.Reply{Body: map[string]any{"op": "echo", "uid": c.Peer.UID}}, nil
	case "put":
		if len(c.FDs) != 1 {
			return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "put takes one pty master, got %d fds", len(c.FDs))
		}
		if _, err := unix.IoctlGetInt(int(c.FDs[0].Fd()), unix.TIOCGPTN); err != nil {
			return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "put: not a pty master: %v", err)
		}
		return rpc.Reply{Body: map[string]any{"op": "put"}}, nil
	}
	return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "unknown op %q", req.Op)
}

// inProcess starts an rpc.Server in this process on a socket every uid
// can reach. mod may change its limits before it starts.
func inProcess(t testing.TB, mod func(*rpc.Server)) *target {
	t.Helper()
	dir, _ := publicDir(t)
	sockDir, err := os.MkdirTemp(dir, "inproc-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockDir, 0o755)
	t.Cleanup(func() { os.RemoveAll(sockDir) }) // after the server stops (cleanups run last first)
	sock := filepath.Join(sockDir, "s.sock")
	allow := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	s := &rpc.Server{
		// The helpers' deadline: at 300 ms a good call on a loaded
		// 2-core machine sometimes ran out of it (closed without a byte).
		Name: "hostile", Log: slog.New(slog.DiscardHandler), Timeout: helperTimeout,
		Routes: []rpc.Route{
			{Client: rpcHello(inClient), Server: rpcHello(inServer), Allow: allow, MaxFDs: 0, Handle: inHandler},
			{Client: rpcHello(inPtyClient), Server: rpcHello(inPtyServer), Allow: allow, MaxFDs: 1, Handle: inHandler},
		},
	}
	if mod != nil {
		mod(s)
	}
	// Read the limits before Serve fills in its defaults.
	maxConns, timeout := s.MaxConns, s.Timeout
	if maxConns == 0 {
		maxConns = 64
	}
	rpctest.Serve(t, s, sock, 0o666)
	return &target{
		name: "in-process", sock: sock, pid: "self",
		client: inClient, server: inServer, other: inOther,
		maxFrame: rpc.DefaultMaxFrame, maxFDs: 0, maxConns: maxConns, timeout: timeout,
		good:   request("echo", map[string]any{}),
		goodOK: wantOK(0),
		ptyPut: request("put", map[string]any{}), ptyWrong: "bad-request: put: not a pty master: ",
	}
}

// --- the real helpers -----------------------------------------------------

// helperSuite is the five helper binaries, built once, with their
// manifest, keys and running processes.
type helperSuite struct {
	dir, bin, run, state string
	manifest             *buildid.Manifest
	manifestPath         string
	keyPath              string
	key                  grant.Key
	policyPath           string

	mu    sync.Mutex
	procs []*exec.Cmd
	logs  map[string]*bytes.Buffer
}

var (
	suiteOnce sync.Once
	theSuite  *helperSuite
	suiteErr  error
)

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// helpers builds the helper binaries (once per test run) into a public
// directory and writes their build manifest, with stand-in files for the
// frontend and sluicectl, whose lines the tests present.
func helpers(t testing.TB) *helperSuite {
	t.Helper()
	pub, _ := publicDir(t)
	suiteOnce.Do(func() {
		s := &helperSuite{dir: filepath.Join(pub, "suite"), logs: map[string]*bytes.Buffer{}}
		s.bin, s.run, s.state = filepath.Join(s.dir, "bin"), filepath.Join(s.dir, "run"), filepath.Join(s.dir, "state")
		for _, d := range []string{s.dir, s.bin, s.run} {
			if suiteErr = os.Mkdir(d, 0o755); suiteErr != nil {
				return
			}
		}
		if suiteErr = os.Mkdir(s.state, 0o700); suiteErr != nil {
			return
		}
		build := exec.Command(goTool(), "build", "-o", s.bin+"/",
			"sluice/helpers/auth/cmd/sluice-auth", "sluice/helpers/policy/cmd/sluice-policy",
			"sluice/helpers/shell/cmd/sluice-shell", "sluice/helpers/ptystore/cmd/sluice-ptystore",
			"sluice/helpers/hangup/cmd/sluice-hangup",
			// for its build IDs: policy serves "record to policy" too
			"sluice/helpers/record/cmd/sluice-record")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			suiteErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		// As root the shell helper opens every shell through sluice-login,
		// found beside its own executable; PAM needs cgo (helpers/shell/login).
		build = exec.Command(goTool(), "build", "-o", s.bin+"/", "sluice/helpers/shell/login/cmd/sluice-login")
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := build.CombinedOutput(); err != nil {
			suiteErr = fmt.Errorf("go build sluice-login: %v\n%s", err, out)
			return
		}
		for _, comp := range []string{msg.Frontend, msg.Admin} {
			os.WriteFile(filepath.Join(s.bin, suite.BinaryName(comp)), []byte("stand-in for "+comp+"\n"), 0o755)
		}
		if s.manifest, suiteErr = suite.BuildManifest(s.bin); suiteErr != nil {
			return
		}
		s.manifestPath = filepath.Join(s.bin, "build-ids.json")
		if suiteErr = s.manifest.Write(s.manifestPath); suiteErr != nil {
			return
		}
		s.keyPath = filepath.Join(s.dir, "grant.key")
		if s.key, suiteErr = grant.WriteKeyFile(s.keyPath); suiteErr != nil {
			return
		}
		s.policyPath = filepath.Join(s.dir, "policy")
		// The second rule is for the sessions the tests put and attach to
		// (alice's, as alice): every pty-get asks policy whether the
		// owner may still have that shell.
		suiteErr = os.WriteFile(s.policyPath, []byte("allow alice as root on .host command /bin/true\nallow alice as alice on .host\n"), 0o644)
		theSuite = s
	})
	if suiteErr != nil {
		t.Fatal(suiteErr)
	}
	return theSuite
}

// hello is a component's lines on a protocol, from the manifest.
func (s *helperSuite) hello(t testing.TB, component, protocol, role string) Hello {
	t.Helper()
	p, ok := msg.Lookup(protocol)
	if !ok {
		t.Fatalf("no protocol %q", protocol)
	}
	e, err := s.manifest.Lookup(component, msg.Intent(p, role))
	if err != nil {
		t.Fatal(err)
	}
	return Hello{Intent: e.Intent, BuildID: e.BuildID}
}

// start runs a helper with --listen in the run directory and waits for
// its socket. The processes live until the test binary ends.
func (s *helperSuite) start(t testing.TB, name, sock string, args ...string) string {
	t.Helper()
	return s.startIn(t, s.run, name, sock, args...)
}

// startIn is start with another runtime directory, where the helper finds
// the sockets of the helpers it calls: a test's own set of helpers.
func (s *helperSuite) startIn(t testing.TB, run, name, sock string, args ...string) string {
	t.Helper()
	os.Remove(sock)
	args = append([]string{"--listen", sock, "--mode", "0666"}, args...)
	cmd := exec.Command(filepath.Join(s.bin, "sluice-"+name), args...)
	cmd.Env = append(os.Environ(), "SLUICE_MANIFEST="+s.manifestPath, "SLUICE_RUNTIME_DIR="+run)
	log := &bytes.Buffer{}
	cmd.Stderr = &lockedWriter{mu: &s.mu, w: log}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.procs = append(s.procs, cmd)
	s.logs[filepath.Base(sock)] = log
	s.mu.Unlock()
	for {
		if st, err := os.Stat(sock); err == nil && st.Mode().Perm() == 0o666 {
			return strconv.Itoa(cmd.Process.Pid)
		}
		select {
		case <-exited:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("sluice-%s exited before listening: %s", name, log)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// logOf returns what a helper logged so far, for failure messages.
func (s *helperSuite) logOf(sock string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.logs[filepath.Base(sock)]; b != nil {
		out := b.String()
		if len(out) > 4000 {
			out = "…" + out[len(out)-4000:]
		}
		return out
	}
	return ""
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func stopHelpers() {
	if theSuite == nil {
		return
	}
	theSuite.mu.Lock()
	defer theSuite.mu.Unlock()
	for _, c := range theSuite.procs {
		c.Process.Kill()
	}
}

// grantFor signs a grant with the suite's key.
func (s *helperSuite) grantFor(t testing.TB, user string) msg.Grant {
	t.Helper()
	g, err := grant.Sign(s.key, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

const helperTimeout = 2 * time.Second

var (
	helperTargetsOnce sync.Once
	helperTargets     []*target
)

// helperTargetList starts each helper once and describes its attacked
// route: the one the least trusted caller reaches.
func helperTargetList(t *testing.T) []*target {
	t.Helper()
	s := helpers(t)
	helperTargetsOnce.Do(func() {
		common := []string{"--timeout", helperTimeout.String()}
		sock := func(n string) string { return filepath.Join(s.run, n+".sock") }

		// shell first: policy's client to it is made at start.
		shellPID := s.start(t, "shell", sock("shell"), append(common, "--backend", "embedded")...)
		authPID := s.start(t, "auth", sock("auth"), append(common, "--state-dir", s.state, "--grant-key", s.keyPath,
			"--rp-id", rpID, "--origin", origin)...)
		policyPID := s.start(t, "policy", sock("policy"), append(common, "--policy", s.policyPath, "--grant-key", s.keyPath)...)
		// hangup before ptystore, which calls it on every drop (both run as
		// root here, and each allows only its own uid by default).
		s.start(t, "hangup", sock("hangup"), common...)
		ptyPID := s.start(t, "ptystore", sock("ptystore"), append(common, "--grant-key", s.keyPath, "--hangup-grace", "100ms",
			"--policy-file", s.policyPath,
			// No recorder runs here: a uid no test process has, so
			// that a socket pair the tests make is not a recorder's.
			"--recorders", "uid:4242")...)

		alice, bob := s.grantFor(t, "alice"), s.grantFor(t, "bob")
		base := func(name, pid string) *target {
			return &target{name: name, sock: sock(name), pid: pid, maxFrame: rpc.DefaultMaxFrame,
				maxConns: 64, timeout: helperTimeout}
		}
		auth := base("auth", authPID)
		auth.client = s.hello(t, msg.Frontend, msg.ProtoWebToAuth, "client")
		auth.server = s.hello(t, msg.Auth, msg.ProtoWebToAuth, "server")
		auth.other = s.hello(t, msg.Frontend, msg.ProtoWebToPolicy, "client")
		auth.good, auth.goodOK = request(msg.OpLoginBegin, msg.LoginBegin{}), wantOK(0)

		pol := base("policy", policyPID)
		pol.client = s.hello(t, msg.Frontend, msg.ProtoWebToPolicy, "client")
		pol.server = s.hello(t, msg.Policy, msg.ProtoWebToPolicy, "server")
		pol.other = s.hello(t, msg.Frontend, msg.ProtoWebToAuth, "client")
		// bob may not: the handler verifies the grant, decides, and denies.
		pol.good = request(msg.OpCreateShellSession, msg.CreateShellSession{
			Machine: msg.HostMachine, User: "root", Args: []string{"/bin/true"}, Grant: bob})
		pol.goodOK = wantCode(msg.CodeDenied)

		sh := base("shell", shellPID)
		sh.client = s.hello(t, msg.Policy, msg.ProtoPolicyToShell, "client")
		sh.server = s.hello(t, msg.Shell, msg.ProtoPolicyToShell, "server")
		sh.other = s.hello(t, msg.Frontend, msg.ProtoWebToPolicy, "client")
		sh.good = request(msg.OpOpenShell, msg.OpenShell{Machine: msg.HostMachine, User: "root",
			Args: []string{"/bin/true"}, Requester: "hostile"})
		sh.goodOK = wantOK(1)

		pty := base("ptystore", ptyPID)
		pty.client = s.hello(t, msg.Frontend, msg.ProtoWebToPtyStore, "client")
		pty.server = s.hello(t, msg.PtyStore, msg.ProtoWebToPtyStore, "server")
		pty.other = s.hello(t, msg.Admin, msg.ProtoAdminToAuth, "client")
		pty.maxFDs = 0 // the web route takes none: pty-put is policy's
		// Every helper runs as root here, so root is also policy, whose
		// puts have slots of their own once the shared ones are taken
		// (rpc.Server.Reserved): a flood from root holds both pools. A
		// flood from the frontend's uid holds only the shared one
		// (tests/e2e TestCreateWhilePtyStoreFull).
		pty.maxConns = 64 + 64
		pty.good, pty.goodOK = request(msg.OpPtyList, msg.PtyList{Grant: alice}), wantOK(0)
		pty.ptyPut = request(msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: msg.SessionInfo{
			ID: "hostile-1", Owner: "alice", UnixUser: "alice", Machine: msg.HostMachine,
			Created: time.Now().UnixMilli(), Sharing: msg.SharePrivate}})
		pty.ptyWrong = "bad-request: put hostile-1: "
		pty.putClient = s.hello(t, msg.Policy, msg.ProtoPolicyToPtyStore, "client")
		pty.putServer = s.hello(t, msg.PtyStore, msg.ProtoPolicyToPtyStore, "server")

		helperTargets = []*target{auth, pol, sh, pty}
	})
	if len(helperTargets) == 0 {
		t.Fatal("helpers did not start")
	}
	return helperTargets
}

// Relying party of the auth helper under test.
const (
	rpID   = "localhost"
	origin = "http://localhost:8080"
)

// putHello is the client hello of tg's pty-taking call.
func putHello(tg *target) Hello {
	c, _ := tg.putHellos()
	return c
}
