package ptystore

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/suite"
)

// The restart test runs the real sluice-ptystore binary under fdStore, a
// test service manager doing what systemd does with the fd store: it keeps
// the fds the helper stores and hands them back, named, as activation fds
// after the listening socket when it starts the helper again. As root the
// helper runs as nobody, as under DynamicUser, so it cannot signal the
// shells it holds.

// daemon is one run of the binary.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

type restartRig struct {
	t        *testing.T
	dir      string
	bin      string
	keyPath  string
	key      grant.Key
	sock     string
	listener *os.File
	fds      *fdStore
	web      *rpc.Client
	pol      *rpc.Client
	admin    *rpc.Client
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// helperBinary builds sluice-ptystore once per test run.
func helperBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "ptystore-bin-"); buildErr != nil {
			return
		}
		out, err := exec.Command(goTool(), "build", "-o", buildDir, "sluice/helpers/ptystore/cmd/sluice-ptystore").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "sluice-ptystore")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func newRestartRig(t *testing.T) *restartRig {
	t.Helper()
	// A directory others may enter: the helper may run as nobody.
	dir, err := os.MkdirTemp("", "ptystore-restart-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	r := &restartRig{t: t, dir: dir, bin: filepath.Join(dir, "sluice-ptystore"), key: grant.NewKey(), fds: newFDStore(t)}
	copyFile(t, helperBinary(t), r.bin)
	// The manifest: the binary's own entries, and the two clients' with
	// the made-up IDs the test clients present.
	m, err := suite.BuildManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	m.Entries = append(m.Entries,
		buildid.Entry{Component: msg.Frontend, Protocol: webProto.Name, Role: "client", Intent: webClient.Intent, BuildID: webClient.BuildID},
		buildid.Entry{Component: msg.Admin, Protocol: adminProto.Name, Role: "client", Intent: adminClient.Intent, BuildID: adminClient.BuildID},
		buildid.Entry{Component: msg.Policy, Protocol: putProto.Name, Role: "client", Intent: putClient.Intent, BuildID: putClient.BuildID},
	)
	// ptystore asks policy on every attach.
	servePolicyFor(t, filepath.Join(dir, "policy.sock"), m, r.key)
	if err := m.Write(filepath.Join(dir, "build-ids.json")); err != nil {
		t.Fatal(err)
	}
	expect := func(p msg.Protocol) rpc.Hello {
		e, err := m.Lookup(msg.PtyStore, msg.Intent(p, "server"))
		if err != nil {
			t.Fatal(err)
		}
		return rpc.Hello{Intent: e.Intent, BuildID: e.BuildID}
	}
	r.keyPath = filepath.Join(dir, "grant.key")
	if err := os.WriteFile(r.keyPath, r.key[:], 0o644); err != nil {
		t.Fatal(err)
	}

	// The listening socket belongs to the manager, as with a .socket unit.
	r.sock = filepath.Join(dir, "ptystore.sock")
	l, err := rpc.Listen(r.sock, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if r.listener, err = l.File(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.listener.Close() })
	r.web = &rpc.Client{Path: r.sock, Hello: webClient, Expect: expect(webProto)}
	r.admin = &rpc.Client{Path: r.sock, Hello: adminClient, Expect: expect(adminProto)}
	r.pol = &rpc.Client{Path: r.sock, Hello: putClient, Expect: expect(putProto)}
	return r
}

// start runs the helper with the listening socket and every stored fd as
// activation fds, and waits for READY=1.
func (r *restartRig) start() *daemon {
	t := r.t
	t.Helper()
	stored := r.fds.files()
	files := append([]*os.File{r.listener}, stored...)
	names := []string{"sluice-ptystore.socket"}
	for _, f := range stored {
		names = append(names, f.Name())
	}
	// go-systemd takes the fds only when LISTEN_PID is its own pid, which
	// the shell knows before it execs the helper in its place.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, r.bin,
		"--grant-key", r.keyPath, "--hangup-grace", "0s", "--hangup", "off",
		"--allow", "web to ptystore=uid:0", "--allow", "admin to ptystore=uid:0", "--allow", "policy to ptystore=uid:0")
	cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"NOTIFY_SOCKET=" + r.fds.addr,
		"SLUICE_MANIFEST=" + filepath.Join(r.dir, "build-ids.json"),
		"SLUICE_RUNTIME_DIR=" + r.dir,
		"LISTEN_FDS=" + strconv.Itoa(len(files)),
		"LISTEN_FDNAMES=" + strings.Join(names, ":"),
	}
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = tWriter{t}, tWriter{t}
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	r.fds.drain()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The manager's copies stay with the manager; ours go.
	for _, f := range stored {
		f.Close()
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-d.done })
	r.fds.waitMsg(t, "READY=1")
	return d
}

func (d *daemon) kill(t *testing.T, sig syscall.Signal) syscall.WaitStatus {
	t.Helper()
	d.cmd.Process.Signal(sig)
	<-d.done
	return d.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func (r *restartRig) grant(user string) msg.Grant {
	g, err := grant.Sign(r.key, user, time.Now(), time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	return g
}

func (r *restartRig) get(id string, g msg.Grant, token []byte) (*os.File, msg.PtyGetReply, string) {
	r.t.Helper()
	var rep msg.PtyGetReply
	fds, code := call(r.t, r.web, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id, ShareToken: token}, nil, &rep)
	if code == "" && len(fds) != 1 {
		r.t.Fatalf("get %s: %d fds", id, len(fds))
	}
	if code != "" {
		return nil, rep, code
	}
	return fds[0], rep, ""
}

func (r *restartRig) share(id, mode string) []byte {
	r.t.Helper()
	var rep msg.PtyShareReply
	if _, code := call(r.t, r.web, msg.OpPtyShare, msg.PtyShare{Grant: r.grant("alice"), ID: id, Mode: mode}, nil, &rep); code != "" {
		r.t.Fatalf("share %s %s: %s", id, mode, code)
	}
	// Every share here changes the mode: the fd is stored again under its
	// new name.
	r.fds.waitMsg(r.t, "FDSTORE=1")
	return rep.Token
}

func (r *restartRig) list() []string {
	r.t.Helper()
	var rep msg.PtyListReply
	if _, code := call(r.t, r.admin, msg.OpPtyList, msg.PtyList{}, nil, &rep); code != "" {
		r.t.Fatalf("admin list: %s", code)
	}
	out := ids(rep.Sessions)
	slices.Sort(out)
	return out
}

func TestRestartKeepsSessions(t *testing.T) {
	r := newRestartRig(t)
	d := r.start()
	alice, bob := r.grant("alice"), r.grant("bob")

	// Two sessions: s1 lives through everything, s2's shell ends while
	// the helper is down.
	sh1, sh2 := startShell(t), startShell(t)
	for _, s := range []struct {
		sh *shell
		id string
	}{{sh1, "s1"}, {sh2, "s2"}} {
		if _, code := call(t, r.pol, msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: sessionInfo(s.id, "alice"), Ticket: tk(t, r.key, sessionInfo(s.id, "alice"), s.sh.master)}, []*os.File{s.sh.master}, nil); code != "" {
			t.Fatalf("put %s: %s", s.id, code)
		}
		s.sh.master.Close()
		r.fds.waitMsg(t, "FDSTORE=1")
	}
	f, _, code := r.get("s1", alice, nil)
	if code != "" {
		t.Fatalf("get s1: %s", code)
	}
	converse(t, f)
	f.Close()
	// A read-write token that a later change revokes, and the read-only
	// token that replaces it.
	revoked := r.share("s1", msg.ShareReadWrite)
	ro := r.share("s1", msg.ShareReadOnly)
	var s2name string
	for _, n := range r.fds.names() {
		if info, _, err := parseFDName(n); err == nil && info.ID == "s2" {
			s2name = n
		}
	}

	// kill -9: no chance to clean up. The store's copies keep the ptys.
	if ws := d.kill(t, syscall.SIGKILL); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v", ws)
	}
	sh2.cmd.Process.Kill()
	sh2.exited(t)
	if !sh1.running() {
		t.Fatal("s1's shell died with the helper")
	}
	if n := len(r.fds.names()); n != 2 {
		t.Fatalf("fd store holds %d fds, want 2", n)
	}

	// The second run adopts both, drops the dead one, and serves s1.
	d = r.start()
	r.fds.waitMsg(t, "FDSTOREREMOVE=1", "FDNAME="+s2name)
	if got := r.list(); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("sessions after restart: %q", got)
	}
	f, rep, code := r.get("s1", alice, nil)
	if code != "" || rep.Mode != msg.ModeOwner || rep.Session.Sharing != msg.ShareReadOnly || rep.Session.UnixUser != "u-alice" {
		t.Fatalf("get s1 after restart: %q %+v", code, rep)
	}
	converse(t, f)
	f.Close()
	if f, rep, code := r.get("s1", bob, ro); code != "" || rep.Mode != msg.ShareReadOnly {
		t.Fatalf("read-only token after restart: %q %+v", code, rep)
	} else {
		f.Close()
	}
	if _, _, code := r.get("s1", bob, revoked); code != msg.CodeBadGrant {
		t.Fatalf("token revoked before the restart: %q, want bad-grant", code)
	}

	// Dropping the session when no one else holds the master hangs the
	// shell up, though the helper may not signal it.
	if _, code := call(t, r.web, msg.OpPtyDrop, msg.PtyDrop{Grant: alice, ID: "s1"}, nil, nil); code != "" {
		t.Fatalf("drop: %s", code)
	}
	r.fds.waitMsg(t, "FDSTOREREMOVE=1")
	if sig := sh1.exited(t); sig != syscall.SIGHUP {
		t.Fatalf("s1's shell ended by %v, want SIGHUP", sig)
	}
	if n := r.fds.names(); len(n) != 0 {
		t.Fatalf("fd store still holds %q", n)
	}
	if ws := d.kill(t, syscall.SIGTERM); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("helper on SIGTERM: %v", ws)
	}
}
