package auth

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/helpers/auth/store"
	"sluice/internal/grant"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/suite"
	"sluice/tests/softauthn"
)

// daemon is the real sluice-auth binary serving on --listen.
type daemon struct {
	t     *testing.T
	exe   string
	args  []string
	env   []string
	sock  string
	cmd   *exec.Cmd
	exits chan error
}

func (d *daemon) start() {
	d.t.Helper()
	os.Remove(d.sock)
	d.cmd = exec.Command(d.exe, d.args...)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.Stderr = testWriter{d.t}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exits = make(chan error, 1)
	go func() { d.exits <- d.cmd.Wait() }()
	// Ready when the socket exists (rpc.Listen binds under a umask and
	// chmods, so wait for the final mode too).
	for {
		if st, err := os.Stat(d.sock); err == nil && st.Mode().Perm() == 0o666 {
			return
		}
		select {
		case err := <-d.exits:
			d.t.Fatalf("sluice-auth exited before listening: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.exits; err != nil {
		d.t.Errorf("sluice-auth on SIGTERM: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Logf("sluice-auth: %s", b); return len(b), nil }

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// suiteDir is a built sluice-auth with its manifest, key and directories.
type suiteDir struct {
	pub, testExe, bin, run, state string
	m                             *buildid.Manifest
	manifest, keyPath             string
	key                           grant.Key
}

// buildSuite builds sluice-auth into a directory other uids can reach and
// writes a build manifest for it, with stand-in files for the frontend and
// sluicectl whose hellos the test presents.
func buildSuite(t *testing.T) suiteDir {
	t.Helper()
	var s suiteDir
	s.pub, s.testExe = publicDir(t)
	s.bin = filepath.Join(s.pub, "bin")
	s.run = filepath.Join(s.pub, "run")
	s.state = filepath.Join(s.pub, "state")
	for _, d := range []string{s.bin, s.run} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(s.state, 0o700); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(goTool(), "build", "-o", filepath.Join(s.bin, "sluice-auth"), "sluice/helpers/auth/cmd/sluice-auth")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, comp := range []string{msg.Frontend, msg.Admin} {
		os.WriteFile(filepath.Join(s.bin, suite.BinaryName(comp)), []byte("stand-in for "+comp+"\n"), 0o755)
	}
	var err error
	if s.m, err = suite.BuildManifest(s.bin); err != nil {
		t.Fatal(err)
	}
	s.manifest = filepath.Join(s.bin, "build-ids.json")
	if err := s.m.Write(s.manifest); err != nil {
		t.Fatal(err)
	}
	s.keyPath = filepath.Join(s.pub, "grant.key")
	if s.key, err = grant.WriteKeyFile(s.keyPath); err != nil {
		t.Fatal(err)
	}
	return s
}

// client returns an rpc client that speaks proto as component self, with
// the hellos the manifest records.
func (s suiteDir) client(t *testing.T, sock, proto, self string) *rpc.Client {
	t.Helper()
	p, _ := msg.Lookup(proto)
	mine, err := s.m.Lookup(self, msg.Intent(p, "client"))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := s.m.Lookup(msg.Auth, msg.Intent(p, "server"))
	if err != nil {
		t.Fatal(err)
	}
	return &rpc.Client{Path: sock,
		Hello:  rpc.Hello{Intent: mine.Intent, BuildID: mine.BuildID},
		Expect: rpc.Hello{Intent: peer.Intent, BuildID: peer.BuildID}}
}

// TestBinary builds sluice-auth, writes a build manifest for it (with
// stand-in files for the frontend and sluicectl, whose hellos the test
// presents), and runs the whole flow against the binary over --listen:
// enroll, register, login, grant; a wrong key, a spent token and a
// non-admin caller refused; a login begun before a restart finished after
// it (ceremony state lives with the caller, not in the process).
func TestBinary(t *testing.T) {
	s := buildSuite(t)
	run, state, key := s.run, s.state, s.key
	d := &daemon{
		t:    t,
		exe:  filepath.Join(s.bin, "sluice-auth"),
		sock: filepath.Join(run, "auth.sock"),
		args: []string{"--listen", filepath.Join(run, "auth.sock"), "--mode", "0666",
			"--state-dir", state, "--grant-key", s.keyPath,
			"--rp-id", rpID, "--origin", origin, "--origin", "http://127.0.0.1:8080",
			// Let nobody through the allowlist so the handler's own
			// admin check is what refuses them.
			"--allow", "admin to auth=uid:0,uid:65534"},
		env: []string{"SLUICE_MANIFEST=" + s.manifest, "SLUICE_RUNTIME_DIR=" + run},
	}
	d.start()
	defer func() {
		if d.cmd.ProcessState == nil {
			d.stop()
		}
	}()

	e := &env{t: t, grantKey: key, now: time.Now(),
		web: s.client(t, d.sock, msg.ProtoWebToAuth, msg.Frontend), admin: s.client(t, d.sock, msg.ProtoAdminToAuth, msg.Admin)}

	// A client with a stale build ID is refused at the handshake.
	stale := *e.web
	stale.Hello.BuildID = buildid.OfBytes(stale.Hello.Intent, []byte("old frontend"))
	err := call(&stale, msg.OpLoginBegin, msg.LoginBegin{}, nil)
	if !errors.Is(err, rpc.ErrHandshake) {
		t.Fatalf("stale frontend: %v", err)
	}

	alice := softauthn.New(rpID, origin)
	tok := e.enroll("alice")
	if _, err := e.register(alice, tok); err != nil {
		t.Fatal(err)
	}
	e.mustLogin(alice, "", "alice")
	e.mustLogin(alice, "alice", "alice")

	// Token reuse.
	_, err = e.register(softauthn.New(rpID, origin), tok)
	wantCode(t, err, msg.CodeNotFound)
	// Wrong key.
	wrong := alice.Clone()
	wrong.WrongKey = true
	_, err = e.login(wrong, "")
	wantCode(t, err, msg.CodeDenied)
	// The second origin is allowed too.
	other := alice.Clone()
	other.Origin = "http://127.0.0.1:8080"
	e.mustLogin(other, "", "alice")
	alice = other

	// A non-admin caller of another uid, through the allowlist.
	t.Setenv(childHelloEnv, e.admin.Hello.Intent+"\n"+e.admin.Hello.BuildID+"\n"+e.admin.Expect.Intent+"\n"+e.admin.Expect.BuildID)
	if got := asNobody(t, s.testExe, d.sock, nil); got != rpc.CodeForbidden {
		t.Fatalf("nobody's enroll: %q, want %q", got, rpc.CodeForbidden)
	}

	// Begin a login, restart the helper, finish: nothing was in memory.
	lf, err := e.begin(alice, "")
	if err != nil {
		t.Fatal(err)
	}
	d.stop()
	d.start()
	g, err := e.finish(lf)
	if err != nil {
		t.Fatalf("login finished after a restart: %v", err)
	}
	if err := grant.Verify(key, g, time.Now()); err != nil || g.User != "alice" {
		t.Fatalf("grant %+v: %v", g, err)
	}
	// And the same state is refused a second time, across the restart.
	_, err = e.finish(lf)
	wantCode(t, err, msg.CodeDenied)
	if !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replay refused for another reason: %v", err)
	}

	st, err := os.Stat(filepath.Join(state, "seal.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seal key in the state dir: %v, %v", st, err)
	}
}

// TestAcceptYes plays systemd's Accept=yes: the test owns the listening
// socket, and for every connection starts a fresh sluice-auth with the
// accepted connection as its activation fd (LISTEN_FDS=1). Every call of
// the flow is thus served by a different process sharing only the state
// directory: the sealed ceremony state and the store carry everything.
func TestAcceptYes(t *testing.T) {
	s := buildSuite(t)
	sock := filepath.Join(s.run, "auth.sock")
	l, err := rpc.Listen(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(s.bin, "sluice-auth")
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		spawned  int
		failures []error
	)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			f, err := c.File()
			c.Close()
			if err != nil {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
				continue
			}
			// LISTEN_PID must be the pid of the process that reads the
			// fds: let sh learn its pid and exec the helper in place.
			cmd := exec.Command("/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`, exe,
				"--state-dir", s.state, "--grant-key", s.keyPath, "--rp-id", rpID, "--origin", origin)
			cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=connection",
				"SLUICE_MANIFEST="+s.manifest, "SLUICE_RUNTIME_DIR="+s.run)
			cmd.ExtraFiles = []*os.File{f}
			cmd.Stderr = testWriter{t}
			err = cmd.Start()
			f.Close()
			mu.Lock()
			if err != nil {
				failures = append(failures, err)
			} else {
				spawned++
			}
			mu.Unlock()
			if err == nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := cmd.Wait(); err != nil {
						mu.Lock()
						failures = append(failures, fmt.Errorf("sluice-auth instance: %w", err))
						mu.Unlock()
					}
				}()
			}
		}
	}()

	e := &env{t: t, grantKey: s.key, now: time.Now(),
		web: s.client(t, sock, msg.ProtoWebToAuth, msg.Frontend), admin: s.client(t, sock, msg.ProtoAdminToAuth, msg.Admin)}
	alice := softauthn.New(rpID, origin)
	if _, err := e.register(alice, e.enroll("alice")); err != nil { // 3 calls
		t.Fatal(err)
	}
	for range 3 { // 6 calls
		e.mustLogin(alice, "", "alice")
	}
	lf, err := e.begin(alice, "alice") // 1 call
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.finish(lf); err != nil { // 1 call
		t.Fatal(err)
	}
	_, err = e.finish(lf) // 1 call: a replay, in yet another process
	wantCode(t, err, msg.CodeDenied)

	l.Close()
	<-acceptDone
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	if spawned != 12 {
		t.Fatalf("%d processes served 12 calls", spawned)
	}
}

// TestInstancesShareStore runs two sluice-auth processes on one state
// directory, as Accept=yes instances are, beside a third holder of the
// database lock: this test process, opening the store as an instance
// does for one transaction. Neither instance holds the database between
// calls; a usernameless login-begin needs no database at all; readers
// share the lock; and a call that waits past --lock-timeout is answered
// busy, having changed nothing.
func TestInstancesShareStore(t *testing.T) {
	s := buildSuite(t)
	instance := func(name string) (*daemon, *env) {
		sock := filepath.Join(s.run, "auth-"+name+".sock")
		d := &daemon{t: t, exe: filepath.Join(s.bin, "sluice-auth"), sock: sock,
			args: []string{"--listen", sock, "--mode", "0666", "--state-dir", s.state, "--grant-key", s.keyPath,
				"--rp-id", rpID, "--origin", origin, "--lock-timeout", "200ms"},
			env: []string{"SLUICE_MANIFEST=" + s.manifest, "SLUICE_RUNTIME_DIR=" + s.run}}
		d.start()
		t.Cleanup(d.stop)
		return d, &env{t: t, grantKey: s.key, now: time.Now(),
			web: s.client(t, sock, msg.ProtoWebToAuth, msg.Frontend), admin: s.client(t, sock, msg.ProtoAdminToAuth, msg.Admin)}
	}
	_, a := instance("a")
	_, b := instance("b")

	alice := softauthn.New(rpID, origin)
	if _, err := a.register(alice, a.enroll("alice")); err != nil {
		t.Fatal(err)
	}
	b.mustLogin(alice, "", "alice")
	a.mustLogin(alice, "alice", "alice")

	// Another instance inside a write transaction.
	w, err := store.Open(s.state, store.Options{})
	if err != nil {
		t.Fatalf("open while both instances are idle: %v", err)
	}
	var begun msg.LoginBeginReply
	if err := call(b.web, msg.OpLoginBegin, msg.LoginBegin{}, &begun); err != nil {
		w.Close()
		t.Fatalf("usernameless login-begin while the database is locked: %v", err)
	}
	err = call(a.web, msg.OpLoginBegin, msg.LoginBegin{User: "alice"}, &begun)
	w.Close()
	wantCode(t, err, msg.CodeBusy)

	// Another instance reading.
	r, err := store.OpenReadOnly(s.state, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lf, err := b.begin(alice, "alice")
	if err != nil {
		r.Close()
		t.Fatalf("login-begin beside a reader: %v", err)
	}
	_, err = a.finish(lf)
	r.Close()
	wantCode(t, err, msg.CodeBusy)
	g, err := a.finish(lf)
	if err != nil {
		t.Fatalf("the same login once the reader is gone: %v", err)
	}
	if err := grant.Verify(s.key, g, time.Now()); err != nil || g.User != "alice" {
		t.Fatalf("grant %+v: %v", g, err)
	}
}
