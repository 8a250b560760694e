package shell_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/helpers/shell"
	"sluice/internal/pty"
	"sluice/msg"
	"sluice/tests/ptytest"
)

// childEnv makes the test binary, re-executed, run one embedded-backend
// open as whatever uid it was started with and print the outcome.
const childEnv = "SLUICE_SHELL_TEST_CHILD"

func TestMain(m *testing.M) {
	if user := os.Getenv(childEnv); user != "" {
		os.Exit(child(user))
	}
	cleanup, err := buildLogin()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shell test:", err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// loginBin is the sluice-login the root tests' backend runs: from
// $SLUICE_TEST_BIN after make build, else built here with cgo.
var loginBin string

func buildLogin() (func(), error) {
	if dir := os.Getenv("SLUICE_TEST_BIN"); dir != "" {
		loginBin = filepath.Join(dir, "sluice-login")
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", "sluice-login-test")
	if err != nil {
		return nil, err
	}
	loginBin = filepath.Join(dir, "sluice-login")
	cmd := exec.Command("go", "build", "-o", loginBin, "sluice/helpers/shell/login/cmd/sluice-login")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("build sluice-login: %v: %s", err, out)
	}
	return func() { os.RemoveAll(dir) }, nil
}

func embedded() *shell.Embedded { return &shell.Embedded{Login: loginBin} }

// child opens a shell for user and reports "refused", "error: ...", or
// "opened" followed by what the shell wrote.
func child(user string) int {
	sh, err := (&shell.Embedded{}).Open(context.Background(), msg.OpenShell{Machine: msg.HostMachine, User: user})
	switch {
	case errors.Is(err, shell.ErrRefused):
		fmt.Println("refused:", err)
		return 0
	case err != nil:
		fmt.Println("error:", err)
		return 0
	}
	defer sh.Master.Close()
	// The shell (nologin for nobody) says something and exits; read it all.
	out, _ := io.ReadAll(sh.Master)
	fmt.Printf("opened: %s\n", out)
	return 0
}

func open(t *testing.T, req msg.OpenShell) *ptytest.Term {
	t.Helper()
	sh, err := embedded().Open(context.Background(), req)
	if err != nil {
		t.Fatalf("open %+v: %v", req, err)
	}
	if sh.PID <= 0 {
		t.Errorf("pid %d", sh.PID)
	}
	checkMasterFlags(t, sh.Master)
	noSlaveHeld(t, sh.Master)
	term, err := ptytest.New(sh.Master)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.Close() })
	return term
}

func checkMasterFlags(t *testing.T, f *os.File) {
	t.Helper()
	fd := f.Fd()
	fl, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.FD_CLOEXEC == 0 {
		t.Error("master is not close-on-exec")
	}
	st, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st&unix.O_ACCMODE != unix.O_RDWR {
		t.Errorf("master access mode %#o, want O_RDWR", st&unix.O_ACCMODE)
	}
}

// noSlaveHeld checks that this process kept no fd of the pty's slave:
// else the shell would never see a hangup when the master is closed.
func noSlaveHeld(t *testing.T, master *os.File) {
	t.Helper()
	slave, err := pty.Name(master)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); target == slave {
			t.Errorf("fd %s still open on the slave %s", e.Name(), slave)
		}
	}
}

// expect types line and waits for want. The typed line is echoed by the
// terminal, so want must be something only the command's output contains
// (hence an empty quoted string inside the word, as in the hello test).
func expect(t *testing.T, term *ptytest.Term, line, want string) string {
	t.Helper()
	if err := term.Type(line + "\n"); err != nil {
		t.Fatal(err)
	}
	out, err := term.Expect(want)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
}

func TestEmbeddedLoginShellAsRoot(t *testing.T) {
	requireRoot(t)
	acct, err := shell.LookupAccount("root")
	if err != nil {
		t.Fatal(err)
	}
	term := open(t, msg.OpenShell{Machine: msg.HostMachine, User: "root", Env: []string{"TERM=vt100", "LANG=C.UTF-8"}})
	expect(t, term, `echo he''llo`, "hello")
	// A login shell: argv0 is "-" and the shell's base name.
	expect(t, term, `echo "<$0>"`, "<-"+filepath.Base(acct.Shell)+">")
	expect(t, term, `echo "<$HOME|$USER|$LOGNAME|$TERM|$LANG|$(pwd)>"`,
		fmt.Sprintf("<%s|root|root|vt100|C.UTF-8|%s>", acct.Home, acct.Home))
	// Its own session, with the pty as controlling terminal.
	out := expect(t, term, `echo "<$(cut -d' ' -f6 /proc/$$/stat)|$$|$(tty)>"; echo do''ne`, "done")
	m := regexp.MustCompile(`<(\d+)\|(\d+)\|/dev/pts/\d+>`).FindStringSubmatch(out)
	if m == nil || m[1] != m[2] {
		t.Errorf("shell is not a session leader on a pts: %q", out)
	}
}

func TestEmbeddedOtherUser(t *testing.T) {
	requireRoot(t)
	// nobody's login shell is nologin, so run a fixed command, as policy
	// may allow; the credentials are switched the same way.
	term := open(t, msg.OpenShell{Machine: msg.HostMachine, User: "nobody", Args: []string{"/bin/sh", "-i"}})
	expect(t, term, `echo "<$(id -u):$(id -g):$(id -G)>"`, "<65534:65534:65534>")
	expect(t, term, `echo "<$USER|$(pwd)>"`, "<nobody|/>") // HOME /nonexistent: start in /
	// No fd of the helper's leaked into the shell: only the slave.
	fds := expect(t, term, `ls -l /proc/$$/fd; echo do''ne`, "done")
	if !strings.Contains(fds, "/dev/pts/") || strings.Contains(fds, "ptmx") || strings.Contains(fds, "socket:") || strings.Contains(fds, "pipe:") {
		t.Errorf("the shell's fds:\n%s", fds)
	}
}

func TestEmbeddedNologin(t *testing.T) {
	requireRoot(t)
	// nobody's own login shell refuses it: what it says must come through.
	term := open(t, msg.OpenShell{Machine: msg.HostMachine, User: "nobody"})
	if _, err := term.Expect("not available"); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  msg.OpenShell
		want error
		text string
	}{
		{"other machine", msg.OpenShell{Machine: "web1", User: "root"}, shell.ErrRefused, "no machined"},
		{"unknown user", msg.OpenShell{Machine: msg.HostMachine, User: "no-such-user-sluice"}, shell.ErrNoAccount, "no-such-user-sluice"},
		{"missing command", msg.OpenShell{Machine: msg.HostMachine, User: "root", Args: []string{"/nonexistent/cmd"}}, nil, "/nonexistent/cmd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := embedded().Open(context.Background(), tc.req)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v, want %v mentioning %q", err, tc.want, tc.text)
			}
		})
	}
}

// TestEmbeddedNotRoot runs the backend in a child process as nobody: it
// must refuse root's shell, and may open nobody's own.
func TestEmbeddedNotRoot(t *testing.T) {
	requireRoot(t)
	exe := exeForNobody(t)
	for _, tc := range []struct {
		user, want string
	}{
		{"root", "refused: shell: refused: running as uid 65534, cannot open a shell for root (uid 0) without root"},
		{"nobody", "opened: This account is currently not available."},
	} {
		t.Run(tc.user, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = []string{childEnv + "=" + tc.user}
			cmd.Dir = "/"
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v: %s", err, out)
			}
			if !strings.Contains(strings.ReplaceAll(string(out), "\r", ""), tc.want) {
				t.Fatalf("child said %q, want %q", out, tc.want)
			}
		})
	}
}

// exeForNobody copies the test binary where nobody can execute it (go
// test's build directory is private to root).
func exeForNobody(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sluice-shell-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "shell.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}
