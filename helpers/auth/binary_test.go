package auth

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/helpers/grant"
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

// TestBinary builds sluice-auth, writes a build manifest for it (with
// stand-in files for the frontend and sluicectl, whose hellos the test
// presents), and runs the whole flow against the binary over --listen:
// enroll, register, login, grant; a wrong key, a spent token and a
// non-admin caller refused; a login begun before a restart finished after
// it (ceremony state lives with the caller, not in the process).
func TestBinary(t *testing.T) {
	pub, testExe := publicDir(t)
	bin := filepath.Join(pub, "bin")
	run := filepath.Join(pub, "run")
	state := filepath.Join(pub, "state")
	for _, d := range []string{bin, run} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(goTool(), "build", "-o", filepath.Join(bin, "sluice-auth"), "sluice/helpers/auth/cmd/sluice-auth")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, comp := range []string{msg.Frontend, msg.Admin} {
		os.WriteFile(filepath.Join(bin, suite.BinaryName(comp)), []byte("stand-in for "+comp+"\n"), 0o755)
	}
	m, err := suite.BuildManifest(bin)
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(bin, "build-ids.json")
	if err := m.Write(manifest); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(pub, "grant.key")
	key, err := grant.WriteKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}

	d := &daemon{
		t:    t,
		exe:  filepath.Join(bin, "sluice-auth"),
		sock: filepath.Join(run, "auth.sock"),
		args: []string{"--listen", filepath.Join(run, "auth.sock"), "--mode", "0666",
			"--state-dir", state, "--grant-key", keyPath,
			"--rp-id", rpID, "--origin", origin, "--origin", "http://127.0.0.1:8080",
			// Let nobody through the allowlist so the handler's own
			// admin check is what refuses them.
			"--allow", "admin to auth=uid:0,uid:65534"},
		env: []string{"SLUICE_MANIFEST=" + manifest, "SLUICE_RUNTIME_DIR=" + run},
	}
	d.start()
	defer func() {
		if d.cmd.ProcessState == nil {
			d.stop()
		}
	}()

	clientFor := func(proto, self string) *rpc.Client {
		p, _ := msg.Lookup(proto)
		mine, err := m.Lookup(self, msg.Intent(p, "client"))
		if err != nil {
			t.Fatal(err)
		}
		peer, err := m.Lookup(msg.Auth, msg.Intent(p, "server"))
		if err != nil {
			t.Fatal(err)
		}
		return &rpc.Client{Path: d.sock,
			Hello:  rpc.Hello{Intent: mine.Intent, BuildID: mine.BuildID},
			Expect: rpc.Hello{Intent: peer.Intent, BuildID: peer.BuildID}}
	}
	e := &env{t: t, grantKey: key, now: time.Now(),
		web: clientFor("web to auth", msg.Frontend), admin: clientFor("admin to auth", msg.Admin)}

	// A client with a stale build ID is refused at the handshake.
	stale := *e.web
	stale.Hello.BuildID = buildid.OfBytes(stale.Hello.Intent, []byte("old frontend"))
	if err := call(&stale, msg.OpLoginBegin, msg.LoginBegin{}, nil); !errors.Is(err, rpc.ErrHandshake) {
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
	if got := asNobody(t, testExe, d.sock, nil); got != msg.CodeForbidden {
		t.Fatalf("nobody's enroll: %q, want %q", got, msg.CodeForbidden)
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
