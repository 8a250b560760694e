// Package chain tests web -> policy -> shell -> pty (and policy ->
// ptystore, which holds every session) with the real helper binaries:
// built here, described by a manifest made with suite.BuildManifest, run
// with --listen in a temp runtime directory. The test process plays the
// frontend and sluicectl; the manifest gets entries for it with the test
// binary's own build ID, so the helpers' handshake checks are the real
// ones.
package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/grant"
	"sluice/internal/testbuf"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/suite"
	"sluice/tests/ptytest"
)

const policyFile = `# chain test policy
allow alice as root on .host
allow alice as nobody on .host command /bin/sh -i
`

// maxPerUser is ptystore's limit of sessions per sluice user here: no test
// but TestRefusedSessionEnded holds more than one.
const maxPerUser = 2

// env is the running suite, shared by the tests.
var env struct {
	dir      string
	key      grant.Key
	manifest *buildid.Manifest
	web      *rpc.Client // this process as the frontend, calling policy
	store    *rpc.Client // ... and ptystore
	admin    *rpc.Client // this process as sluicectl, calling ptystore
	logs     map[string]*testbuf.Buffer
}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chain:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		return 1, errors.New("needs root: the shell helper switches users (CI runs as root)")
	}
	dir, err := os.MkdirTemp("", "sluice-chain")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	env.dir = dir
	bin, runDir := filepath.Join(dir, "bin"), filepath.Join(dir, "run")
	for _, d := range []string{bin, runDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return 1, err
		}
	}

	// record is built only for its build IDs: the policy helper serves
	// "record to policy" too and refuses to start without its peers in the
	// manifest, as it would on a real machine. ptystore runs: policy puts
	// every session it opens there before answering, and hangup ends what
	// ptystore drops.
	build := exec.Command("go", "build", "-o", bin+"/",
		"sluice/helpers/policy/cmd/sluice-policy", "sluice/helpers/shell/cmd/sluice-shell",
		"sluice/helpers/ptystore/cmd/sluice-ptystore", "sluice/helpers/hangup/cmd/sluice-hangup",
		"sluice/helpers/record/cmd/sluice-record")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("go build: %v\n%s", err, out)
	}
	// As root the shell helper opens every shell through sluice-login,
	// found beside its own executable; PAM needs cgo (helpers/shell/login).
	build = exec.Command("go", "build", "-o", bin+"/", "sluice/helpers/shell/login/cmd/sluice-login")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("go build sluice-login: %v\n%s", err, out)
	}
	man, err := suite.BuildManifest(bin)
	if err != nil {
		return 1, err
	}
	// This test binary plays the frontend (to policy and to ptystore) and
	// sluicectl (to ptystore): add its own build ID for each, as
	// BuildManifest would for a real sluice-frontend and sluicectl.
	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	clients := map[string]*rpc.Client{}
	for _, c := range []struct{ component, protocol string }{
		{msg.Frontend, msg.ProtoWebToPolicy},
		{msg.Frontend, msg.ProtoWebToPtyStore},
		{msg.Admin, msg.ProtoAdminToPtyStore},
	} {
		p, _ := msg.Lookup(c.protocol)
		clientIntent, serverIntent := msg.Intent(p, "client"), msg.Intent(p, "server")
		ids, err := buildid.OfFile(self, clientIntent)
		if err != nil {
			return 1, err
		}
		man.Entries = append(man.Entries, buildid.Entry{Component: c.component, Protocol: p.Name,
			Role: "client", Intent: clientIntent, BuildID: ids[0]})
		server, err := man.Lookup(p.Server, serverIntent)
		if err != nil {
			return 1, err
		}
		clients[c.protocol] = &rpc.Client{
			Path:   filepath.Join(runDir, p.Server+".sock"),
			Hello:  rpc.Hello{Intent: clientIntent, BuildID: ids[0]},
			Expect: rpc.Hello{Intent: serverIntent, BuildID: server.BuildID},
		}
	}
	manPath := filepath.Join(runDir, "build-ids.json")
	if err := man.Write(manPath); err != nil {
		return 1, err
	}
	env.manifest = man
	env.web = clients[msg.ProtoWebToPolicy]
	env.store = clients[msg.ProtoWebToPtyStore]
	env.admin = clients[msg.ProtoAdminToPtyStore]

	keyPath := filepath.Join(dir, "grant.key")
	if env.key, err = grant.WriteKeyFile(keyPath); err != nil {
		return 1, err
	}
	// A command that ignores SIGHUP, for nobody to run: the directory
	// must let nobody reach it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return 1, err
	}
	hupProof := filepath.Join(bin, "hup-proof")
	if err := os.WriteFile(hupProof, []byte("#!/bin/sh\ntrap '' HUP\necho hup-proof ready\nexec sleep 600\n"), 0o755); err != nil {
		return 1, err
	}
	polPath := filepath.Join(dir, "policy")
	if err := os.WriteFile(polPath, []byte(policyFile+"allow carol as nobody on .host command "+hupProof+"\n"), 0o644); err != nil {
		return 1, err
	}

	helperEnv := []string{"SLUICE_RUNTIME_DIR=" + runDir, "SLUICE_MANIFEST=" + manPath, "PATH=/usr/bin:/bin"}
	env.logs = map[string]*testbuf.Buffer{}
	type proc struct {
		cmd    *exec.Cmd
		exited chan struct{}
	}
	var procs []proc
	// Stopped in the reverse of their start order, as systemd stops units
	// that are After= others: ptystore before the shell helper, since the
	// sessions it holds keep their sluice-login, and with it the shell
	// helper's stderr, open until it lets them go.
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].cmd.Process.Signal(syscall.SIGTERM)
			<-procs[i].exited
		}
	}()
	for _, h := range []struct {
		name string
		args []string
	}{
		{msg.Hangup, []string{"--session-cgroups", ""}},
		{msg.Shell, []string{"--backend=embedded"}},
		{msg.PtyStore, []string{"--grant-key", keyPath, "--policy-file", polPath, "--max-per-user", strconv.Itoa(maxPerUser)}},
		{msg.Policy, []string{"--policy", polPath, "--grant-key", keyPath}},
	} {
		sock := filepath.Join(runDir, h.name+".sock")
		cmd := exec.Command(filepath.Join(bin, suite.BinaryName(h.name)), append([]string{"--listen", sock}, h.args...)...)
		cmd.Env = helperEnv
		env.logs[h.name] = &testbuf.Buffer{}
		cmd.Stderr = env.logs[h.name]
		if err := cmd.Start(); err != nil {
			return 1, err
		}
		// cmd.Wait, not Process.Wait: it also waits for the stderr copy, so
		// a helper that exits at start-up has said why by the time we print
		// its log.
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		procs = append(procs, proc{cmd, exited})
		if err := waitForSocket(sock, exited); err != nil {
			return 1, fmt.Errorf("%s: %v\n%s", h.name, err, env.logs[h.name])
		}
	}
	code := m.Run()
	// Every test ends the sessions it opens: closing our copy of a pty no
	// longer does, since ptystore holds one too.
	if held, err := list(); err != nil || len(held) != 0 {
		fmt.Fprintf(os.Stderr, "chain: sessions left in ptystore after the tests: %+v (%v)\n", held, err)
		code = 1
	}
	if code != 0 {
		for name, l := range env.logs {
			fmt.Fprintf(os.Stderr, "--- %s log ---\n%s", name, l)
		}
	}
	return code, nil
}

// waitForSocket waits until a helper has bound its socket, or has exited.
func waitForSocket(path string, exited <-chan struct{}) error {
	for {
		if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before listening")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func signIn(t *testing.T, user string) msg.Grant {
	t.Helper()
	g, err := grant.Sign(env.key, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func create(t *testing.T, a msg.CreateShellSession) (msg.CreateShellSessionReply, []*os.File, error) {
	t.Helper()
	args, err := msgpack.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var rep msg.CreateShellSessionReply
	fds, err := env.web.Call(context.Background(), msg.Request{Op: msg.OpCreateShellSession, Args: args}, nil, &rep)
	return rep, fds, err
}

// open creates a session and ends it when the test is done, as the
// frontend does when its user closes the tab: pty-drop, then its own copy
// of the pty closed. The drop must have ended the shell.
func open(t *testing.T, a msg.CreateShellSession) (msg.CreateShellSessionReply, *ptytest.Term) {
	t.Helper()
	rep, fds, err := create(t, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 1 {
		t.Fatalf("%d fds on the reply, want 1", len(fds))
	}
	term, err := ptytest.New(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer term.Close()
		if err := call(env.store, msg.OpPtyDrop, msg.PtyDrop{Grant: a.Grant, ID: rep.Session.ID}, &msg.PtyDropReply{}); err != nil {
			t.Errorf("drop %s: %v", rep.Session.ID, err)
			return
		}
		waitGone(t, int(rep.Session.PID))
	})
	return rep, term
}

// call makes one call without fds on a client of this process's.
func call(cl *rpc.Client, op string, a, rep any) error {
	args, err := msgpack.Marshal(a)
	if err != nil {
		return err
	}
	fds, err := cl.Call(context.Background(), msg.Request{Op: op, Args: args}, nil, rep)
	for _, f := range fds {
		f.Close()
	}
	return err
}

// list is ptystore's whole list, as sluicectl sessions sees it.
func list() ([]msg.SessionInfo, error) {
	var rep msg.PtyListReply
	err := call(env.admin, msg.OpPtyList, msg.PtyList{}, &rep)
	return rep.Sessions, err
}

// waitGone waits until pid is no more (reaped by its sluice-login, which
// does so at once).
func waitGone(t testing.TB, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("shell %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func expect(t *testing.T, term *ptytest.Term, line, want string) {
	t.Helper()
	if err := term.Type(line + "\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := term.Expect(want); err != nil {
		t.Fatal(err)
	}
}

func TestLoginShell(t *testing.T) {
	rep, term := open(t, msg.CreateShellSession{Machine: ".host", User: "root",
		Env: []string{"TERM=vt100", "LD_PRELOAD=/nonexistent.so"}, Grant: signIn(t, "alice")})
	s := rep.Session
	if len(s.ID) != 32 || s.Owner != "alice" || s.UnixUser != "root" || s.Machine != ".host" ||
		s.Sharing != msg.SharePrivate || s.PID <= 0 {
		t.Errorf("session %+v", s)
	}
	if !strings.HasPrefix(rep.Rule, "allow alice as root on .host (") {
		t.Errorf("rule %q", rep.Rule)
	}
	// The typed line is echoed: quotes inside the word keep the echo from
	// matching, so only the command's output can.
	expect(t, term, `echo he''llo`, "hello")
	expect(t, term, `echo "<$(id -u)|$TERM|${LD_PRELOAD-unset}|$$>"`, fmt.Sprintf("<0|vt100|unset|%d>", s.PID))
}

func TestFixedCommandAsOtherUser(t *testing.T) {
	_, term := open(t, msg.CreateShellSession{Machine: ".host", User: "nobody",
		Args: []string{"/bin/sh", "-i"}, Grant: signIn(t, "alice")})
	expect(t, term, `echo "<$(id -u)>"`, "<65534>")
}

// TestCreateHeldByPtyStore: policy put the session into ptystore before
// the frontend had its fd, under the info it answered with, so sluicectl
// sees it and ends it though the frontend holds its copy and never put
// it; the frontend cannot put one itself.
func TestCreateHeldByPtyStore(t *testing.T) {
	g := signIn(t, "alice")
	rep, fds, err := create(t, msg.CreateShellSession{Machine: ".host", User: "nobody",
		Args: []string{"/bin/sh", "-i"}, Grant: g})
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 1 {
		t.Fatalf("%d fds on the reply, want 1", len(fds))
	}
	// The put route the frontend had is closed: with an fd the frame is
	// refused before any op runs, without one the op is.
	args, _ := msgpack.Marshal(msg.PtyPut{Grant: g, Session: rep.Session})
	for _, tc := range []struct {
		fds  []*os.File
		code string
	}{{fds, rpc.CodeBadRequest}, {nil, rpc.CodeForbidden}} {
		_, err = env.store.Call(context.Background(), msg.Request{Op: msg.OpPtyPut, Args: args}, tc.fds, &msg.PtyPutReply{})
		if rpc.CodeOf(err) != tc.code {
			t.Errorf("the frontend's own pty-put with %d fds: %v, want %s", len(tc.fds), err, tc.code)
		}
	}
	term, err := ptytest.New(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	expect(t, term, `echo "<$(id -u)>"`, "<65534>")

	if !holds(t, rep.Session) {
		t.Fatalf("ptystore does not hold %+v", rep.Session)
	}
	if err := call(env.admin, msg.OpPtyDrop, msg.PtyDrop{ID: rep.Session.ID}, &msg.PtyDropReply{}); err != nil {
		t.Fatalf("sluicectl sessions end: %v", err)
	}
	waitGone(t, int(rep.Session.PID))
	if holds(t, rep.Session) {
		t.Errorf("after the end ptystore still holds %s", rep.Session.ID)
	}
}

// holds says whether ptystore holds s, under exactly that info.
func holds(t *testing.T, s msg.SessionInfo) bool {
	t.Helper()
	held, err := list()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range held {
		if h == s {
			return true
		}
	}
	return false
}

// TestRefusedSessionEnded: a session ptystore will not hold (carol is at
// her limit) is ended, not only hung up by closing its pty: its command
// ignores SIGHUP, and would otherwise run on where no end or revocation
// reaches it.
func TestRefusedSessionEnded(t *testing.T) {
	g := signIn(t, "carol")
	a := msg.CreateShellSession{Machine: ".host", User: "nobody", Args: []string{filepath.Join(env.dir, "bin", "hup-proof")}, Grant: g}
	for range maxPerUser {
		_, term := open(t, a)
		if _, err := term.Expect("hup-proof ready"); err != nil {
			t.Fatal(err)
		}
	}
	before := len(env.logs[msg.Policy].String())
	_, fds, err := create(t, a)
	if rpc.CodeOf(err) != msg.CodeDenied || len(fds) != 0 {
		t.Fatalf("create over the limit: %v, %d fds; want %s and none", err, len(fds), msg.CodeDenied)
	}
	// Policy logs the refused session's shell, after it has answered.
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; {
		for _, line := range strings.Split(env.logs[msg.Policy].String()[before:], "\n") {
			if i := strings.Index(line, " pid="); i >= 0 && strings.Contains(line, "ptystore did not take the session") {
				fmt.Sscanf(line[i+len(" pid="):], "%d", &pid)
			}
		}
		if pid == 0 && time.Now().After(deadline) {
			t.Fatalf("policy logged no refused session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			// Killed here, or it would hold the shell helper's stderr, and
			// with it the end of the run, until its sleep is over.
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the refused session's command %d still runs", pid)
		}
	}
}

func TestRefusals(t *testing.T) {
	other := grant.NewKey()
	forged, _ := grant.Sign(other, "alice", time.Now(), time.Hour)
	for _, tc := range []struct {
		name string
		a    msg.CreateShellSession
		code string
		text string
	}{
		{"denied", msg.CreateShellSession{Machine: ".host", User: "root", Grant: signIn(t, "bob")},
			msg.CodeDenied, "bob may not open a shell as root on .host"},
		{"command not in policy", msg.CreateShellSession{Machine: ".host", User: "root", Args: []string{"/bin/sh"}, Grant: signIn(t, "alice")},
			msg.CodeDenied, `alice may not run "/bin/sh" as root on .host`},
		{"forged grant", msg.CreateShellSession{Machine: ".host", User: "root", Grant: forged},
			msg.CodeBadGrant, "grant not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, fds, err := create(t, tc.a)
			if len(fds) != 0 {
				t.Errorf("%d fds with a refusal", len(fds))
			}
			var re *rpc.RemoteError
			if !errors.As(err, &re) || re.Code != tc.code || re.Msg != tc.text {
				t.Fatalf("err %v, want %s: %s", err, tc.code, tc.text)
			}
		})
	}
	// The helper logs after it has answered, and its stderr reaches us
	// through a pipe: wait for the lines rather than race them.
	logged := func() bool {
		l := env.logs[msg.Policy].String()
		return strings.Contains(l, "result=deny") && strings.Contains(l, "policy: bad grant")
	}
	for deadline := time.Now().Add(10 * time.Second); !logged() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !logged() {
		t.Errorf("policy log lacks the refusals:\n%s", env.logs[msg.Policy].String())
	}
}

// TestShellTalksOnlyToPolicy: a process that is not the policy binary
// cannot speak "policy to shell", even with the right intent.
func TestShellTalksOnlyToPolicy(t *testing.T) {
	p, _ := msg.Lookup(msg.ProtoPolicyToShell)
	shellEntry, err := env.manifest.Lookup(msg.Shell, msg.Intent(p, "server"))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := buildid.OfFile("/proc/self/exe", msg.Intent(p, "client"))
	if err != nil {
		t.Fatal(err)
	}
	cl := &rpc.Client{Path: filepath.Join(env.dir, "run", "shell.sock"),
		Hello:  rpc.Hello{Intent: msg.Intent(p, "client"), BuildID: ids[0]},
		Expect: rpc.Hello{Intent: msg.Intent(p, "server"), BuildID: shellEntry.BuildID}}
	args, _ := msgpack.Marshal(msg.OpenShell{Machine: ".host", User: "root"})
	fds, err := cl.Call(context.Background(), msg.Request{Op: msg.OpOpenShell, Args: args}, nil, &msg.OpenShellReply{})
	if !errors.Is(err, rpc.ErrHandshake) || len(fds) != 0 {
		t.Fatalf("err %v, %d fds; want a refused handshake", err, len(fds))
	}
}

// TestAcceptYesShellOutlivesHelper runs the shell helper as systemd's
// Accept=yes does: one connected socket as fd 3, one call, exit. The shell
// it started must live on after it, reparented to the nearest subreaper
// (here this test, as the runner is in "sluice run").
func TestAcceptYesShellOutlivesHelper(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

	sock := filepath.Join(env.dir, "accept-shell.sock")
	l, err := rpc.Listen(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// Speak as the policy binary: build IDs name binaries, they do not
	// authenticate; the kernel-checked uid (root here) does.
	p, _ := msg.Lookup(msg.ProtoPolicyToShell)
	ci, si := msg.Intent(p, "client"), msg.Intent(p, "server")
	pe, err1 := env.manifest.Lookup(msg.Policy, ci)
	se, err2 := env.manifest.Lookup(msg.Shell, si)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	cl := &rpc.Client{Path: sock, Hello: rpc.Hello{Intent: ci, BuildID: pe.BuildID}, Expect: rpc.Hello{Intent: si, BuildID: se.BuildID}}

	logs, err := os.Create(filepath.Join(t.TempDir(), "shell.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	helperDone := make(chan error, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			helperDone <- err
			return
		}
		f, err := c.File()
		c.Close()
		if err != nil {
			helperDone <- err
			return
		}
		defer f.Close()
		// LISTEN_PID must be the helper's own pid: let sh set it and exec.
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" --backend=embedded`,
			filepath.Join(env.dir, "bin", "sluice-shell"))
		cmd.Env = []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=connection",
			"SLUICE_RUNTIME_DIR=" + filepath.Join(env.dir, "run"), "SLUICE_MANIFEST=" + filepath.Join(env.dir, "run", "build-ids.json")}
		cmd.ExtraFiles = []*os.File{f}
		// A file, not a pipe: sluice-login inherits the helper's stderr
		// and keeps it for the session's log, so a pipe would only reach
		// EOF when the shell ends and Run would wait until then.
		cmd.Stderr = logs
		if err := cmd.Run(); err != nil {
			out, _ := os.ReadFile(logs.Name())
			helperDone <- fmt.Errorf("helper: %v\n%s", err, out)
			return
		}
		helperDone <- nil
	}()

	args, _ := msgpack.Marshal(msg.OpenShell{Machine: ".host", User: "nobody", Args: []string{"/bin/sh", "-i"}, Requester: "alice"})
	var rep msg.OpenShellReply
	fds, err := cl.Call(context.Background(), msg.Request{Op: msg.OpOpenShell, Args: args}, nil, &rep)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-helperDone; err != nil {
		t.Fatal(err)
	}
	if len(fds) != 1 {
		t.Fatalf("%d fds", len(fds))
	}
	term, err := ptytest.New(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	// The helper has exited; the shell answers. Its parent is the
	// sluice-login that made the login and keeps the session, and that
	// keeper is now our child ($PPID would be the parent at shell start,
	// so ask the kernel now).
	keeper := ppid(t, int(rep.PID))
	if got := ppid(t, keeper); got != os.Getpid() {
		t.Errorf("shell %d's keeper %d has parent %d, want this test (%d), the subreaper", rep.PID, keeper, got, os.Getpid())
	}
	expect(t, term, `echo "<$(id -u)|$(cut -d' ' -f4 /proc/$$/stat)>"`, fmt.Sprintf("<65534|%d>", keeper))
	term.Close()
	// The close hangs up the shell; the keeper reaps it, closes the
	// session and exits, and we reap the keeper as the runner would.
	var ws unix.WaitStatus
	if _, err := unix.Wait4(keeper, &ws, 0, nil); err != nil {
		t.Fatalf("wait for keeper %d: %v", keeper, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("keeper ended with %v, want exit 0", ws)
	}
	out, _ := os.ReadFile(logs.Name())
	if !bytes.Contains(out, []byte(`msg="login: session closed"`)) || !bytes.Contains(out, []byte(`status="signal: hangup"`)) {
		t.Errorf("keeper's log has no session closed by a hangup:\n%s", out)
	}
}

// ppid is pid's parent, from /proc/PID/stat (field 4, after the
// parenthesised command name, which may hold spaces).
func ppid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 2 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return n
}

// TestMalformedPolicyRefusesToStart: the helper never serves with a file
// it did not fully understand, and says which line is wrong.
func TestMalformedPolicyRefusesToStart(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(bad, []byte("allow alice as alice on .host\nallow bob as root on web1 readonly-share\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The log line quotes the message; look for its parts.
	want := []string{bad + ":2: unknown option", "readonly-share"}
	for _, args := range [][]string{
		{"--listen", filepath.Join(t.TempDir(), "p.sock"), "--policy", bad, "--grant-key", filepath.Join(env.dir, "grant.key")},
		{"--check", "--policy", bad},
	} {
		cmd := exec.Command(filepath.Join(env.dir, "bin", "sluice-policy"), args...)
		cmd.Env = []string{"SLUICE_RUNTIME_DIR=" + filepath.Join(env.dir, "run")}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), want[0]) || !strings.Contains(string(out), want[1]) {
			t.Errorf("%v: %v, output %q; want exit 1 and %q", args, err, out, want)
		}
	}
	out, err := exec.Command(filepath.Join(env.dir, "bin", "sluice-policy"), "--check", "--policy", filepath.Join(env.dir, "policy")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "allow alice as nobody on .host command /bin/sh -i ("+filepath.Join(env.dir, "policy")+":3)") {
		t.Errorf("--check of the good policy: %v, %q", err, out)
	}
}

// BenchmarkCreateSession: one create-shell-session through the running
// policy, shell and ptystore helpers (fixed command /bin/sh as nobody),
// the session dropped right after, outside the timer. It measures the
// three hops (policy, shell, ptystore's put) and the fork/exec, not the
// shell's own start-up.
func BenchmarkCreateSession(b *testing.B) {
	g, err := grant.Sign(env.key, "alice", time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	args, _ := msgpack.Marshal(msg.CreateShellSession{Machine: ".host", User: "nobody", Args: []string{"/bin/sh", "-i"}, Grant: g})
	req := msg.Request{Op: msg.OpCreateShellSession, Args: args}
	for b.Loop() {
		var rep msg.CreateShellSessionReply
		fds, err := env.web.Call(context.Background(), req, nil, &rep)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, f := range fds {
			f.Close()
		}
		if err := call(env.admin, msg.OpPtyDrop, msg.PtyDrop{ID: rep.Session.ID}, &msg.PtyDropReply{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
