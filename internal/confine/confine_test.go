package confine_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"sluice/internal/confine"
	"sluice/rpc"
)

// The same hellos as internal/confined.
var (
	tClient = rpc.Hello{Intent: "sluice test confine client", BuildID: strings.Repeat("c1", 32)}
	tServer = rpc.Hello{Intent: "sluice test confine server", BuildID: strings.Repeat("c2", 32)}
)

var (
	confined    string // the test program, built without cgo like the helpers
	confinedCgo string // and with cgo, as a test's plain go build makes it
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "confine-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	confined = filepath.Join(dir, "confined")
	confinedCgo = filepath.Join(dir, "confined-cgo")
	for _, b := range []struct{ out, cgo string }{{confined, "0"}, {confinedCgo, "1"}} {
		cmd := exec.Command("go", "build", "-o", b.out, "./internal/confined")
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building confined: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type child struct {
	cmd    *exec.Cmd
	sock   string
	status string // the line it printed after confining itself
}

// start runs the program with args and waits for its "confined:" line,
// printed after Apply, so every probe runs confined.
func start(t *testing.T, args ...string) *child {
	t.Helper()
	return startBin(t, confined, args...)
}

func startBin(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	return startAs(t, nil, bin, args...)
}

// startAs is startBin as another user (nil: ours).
func startAs(t *testing.T, cred *syscall.Credential, bin string, args ...string) *child {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "confined.sock")
	cmd := exec.Command(bin, append([]string{"--listen", sock}, args...)...)
	if cred != nil {
		// The user needs its way to the program and to the socket's directory.
		for _, d := range []string{filepath.Dir(bin), filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("confined's log:\n%s", stderr.String())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("confined said nothing: %v", err)
	}
	if !strings.HasPrefix(line, "confined: ") {
		t.Fatalf("confined: %q", line)
	}
	go io.Copy(io.Discard, out)
	return &child{cmd: cmd, sock: sock, status: strings.TrimSpace(line)}
}

func (c *child) probe(t *testing.T, what, arg string) (string, []*os.File) {
	t.Helper()
	cl := &rpc.Client{Path: c.sock, Hello: tClient, Expect: tServer}
	var res string
	fds, err := cl.Call(context.Background(), []string{what, arg}, nil, &res)
	if err != nil {
		t.Fatalf("probe %s %s: %v", what, arg, err)
	}
	return res, fds
}

func TestConfined(t *testing.T) {
	base := t.TempDir()
	readDir := filepath.Join(base, "ro")
	writeDir := filepath.Join(base, "rw")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{readDir, writeDir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "file"), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// What the probes try is possible for this (root) test process, so
	// a refusal below is the confinement's doing.
	if _, err := os.ReadFile(filepath.Join(outside, "file")); err != nil {
		t.Fatal(err)
	}

	c := start(t, "--read", readDir, "--write", writeDir)
	t.Log(c.status)
	landlock := confine.ABI() > 0
	if landlock != strings.Contains(c.status, "landlock ABI") {
		t.Errorf("kernel Landlock ABI %d, child says %q", confine.ABI(), c.status)
	}
	if !strings.Contains(c.status, "seccomp=true") {
		t.Errorf("no seccomp filter: %q", c.status)
	}
	ll := func(res string) string {
		if landlock {
			return res
		}
		return "ok"
	}
	for _, tc := range []struct{ probe, arg, want string }{
		{"read", filepath.Join(readDir, "file"), "ok"},
		{"read", filepath.Join(writeDir, "file"), "ok"},
		{"read", filepath.Join(outside, "file"), ll("EACCES")},
		{"read", "/etc/hostname", ll("EACCES")},
		{"write", filepath.Join(writeDir, "new"), "ok"},
		{"remove", filepath.Join(writeDir, "new"), "ok"},
		{"mkdir", filepath.Join(writeDir, "sub"), "ok"},
		{"write", filepath.Join(readDir, "new"), ll("EACCES")},
		{"write", filepath.Join(outside, "file"), ll("EACCES")},
		{"mkdir", filepath.Join(outside, "sub"), ll("EACCES")},
		{"socket", "unix", "ok"},
		{"socket", "inet", "EPERM"},
		{"socket", "inet6", "EPERM"},
		{"socket", "netlink", "EPERM"},
		{"connect", c.sock, "ok"},
		{"spawn", "/bin/true", "EPERM"},
		{"prctl", "", "EPERM"},
		{"landlock", "", "EPERM"},
		{"threads", "", "ok"},
		// Threads from before Apply, each trying on its own.
		{"early", filepath.Join(readDir, "file"), "ok"},
		{"early", filepath.Join(outside, "file"), ll("EACCES")},
		{"early", "/etc/hostname", ll("EACCES")},
	} {
		if got, _ := c.probe(t, tc.probe, tc.arg); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.probe, tc.arg, got, tc.want)
		}
	}

	// fds still travel both ways over the rpc.
	res, fds := c.probe(t, "pipe", "")
	if res != "ok" || len(fds) != 1 {
		t.Fatalf("pipe: %s with %d fds", res, len(fds))
	}
	if b, err := io.ReadAll(fds[0]); err != nil || len(b) != 0 {
		t.Errorf("reading the passed pipe: %q %v", b, err)
	}
	fds[0].Close()

	checkThreads(t, c)
}

// TestConfinedUnprivileged: the helpers run as users without
// CAP_SYS_ADMIN (dynamic users), where the kernel takes a filter only
// from a thread with no_new_privs; TestConfined's child is root. Every
// thread must end up with no_new_privs and the filter, and Landlock must
// hold.
func TestConfinedUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching to an unprivileged user needs root (CI runs as root)")
	}
	readDir := t.TempDir()
	os.Chmod(readDir, 0o755)
	if err := os.WriteFile(filepath.Join(readDir, "file"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A few fresh processes: the threads Apply meets differ from run
	// to run.
	for range 3 {
		c := startAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, confined, "--read", readDir)
		if !strings.Contains(c.status, "seccomp=true") {
			t.Fatalf("no seccomp filter: %q", c.status)
		}
		if (confine.ABI() > 0) != strings.Contains(c.status, "landlock ABI") {
			t.Fatalf("kernel Landlock ABI %d, child says %q", confine.ABI(), c.status)
		}
		for _, tc := range []struct{ probe, arg, want string }{
			{"read", filepath.Join(readDir, "file"), "ok"},
			{"prctl", "", "EPERM"},
			{"threads", "", "ok"},
		} {
			if got, _ := c.probe(t, tc.probe, tc.arg); got != tc.want {
				t.Errorf("%s %s: %s, want %s", tc.probe, tc.arg, got, tc.want)
			}
		}
		checkThreads(t, c)
	}
}

// checkThreads: every thread carries the filter and no_new_privs,
// including those the probes made after confinement.
func checkThreads(t *testing.T, c *child) {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", c.cmd.Process.Pid))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("tasks of the child: %v %v", tasks, err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if errors.Is(err, os.ErrNotExist) {
			continue // a thread the runtime let go since the glob
		}
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t1"} {
			if !strings.Contains(s, want+"\n") {
				t.Errorf("%s: no %q", task, want)
			}
		}
	}
}

// TestCgoBuild: a cgo binary cannot put Landlock on every thread, so it
// goes without, and says so; the filter and no_new_privs still reach
// every thread through the seccomp sync.
func TestCgoBuild(t *testing.T) {
	c := startBin(t, confinedCgo, "--write", t.TempDir())
	if c.status != "confined: no_new_privs, no landlock (cgo build), seccomp=true" {
		t.Errorf("status %q", c.status)
	}
	for _, tc := range []struct{ probe, arg, want string }{
		{"socket", "inet", "EPERM"},
		{"spawn", "/bin/true", "EPERM"},
		{"threads", "", "ok"},
	} {
		if got, _ := c.probe(t, tc.probe, tc.arg); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.probe, tc.arg, got, tc.want)
		}
	}
	checkThreads(t, c)
}

// TestPtyProfile: only a profile with Pty opens new ptys (the shell
// helper's machined backend, for a recorded session's outer pty: before
// it had Pty, every recorded session under systemd failed closed with
// "open /dev/ptmx: permission denied").
func TestPtyProfile(t *testing.T) {
	want := "EACCES"
	if confine.ABI() == 0 {
		want = "ok"
	}
	if got, _ := start(t).probe(t, "pty", ""); got != want {
		t.Errorf("pty without Pty: %s, want %s", got, want)
	}
	if got, _ := start(t, "--pty").probe(t, "pty", ""); got != "ok" {
		t.Errorf("pty with Pty: %s", got)
	}
}

func TestExecProfile(t *testing.T) {
	c := start(t, "--exec")
	if got, _ := c.probe(t, "spawn", "/bin/true"); got != "ok" {
		t.Errorf("spawn with Exec: %s", got)
	}
	if got, _ := c.probe(t, "socket", "inet"); got != "EPERM" {
		t.Errorf("socket inet with Exec: %s", got)
	}
}

// TestKilled makes each call that must end the process, in a fresh one.
func TestKilled(t *testing.T) {
	for _, call := range []string{"mount", "ptrace", "unshare", "setuid", "execve"} {
		t.Run(call, func(t *testing.T) {
			out, err := exec.Command(confined, "--die", call).CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("%s: %v\n%s", call, err, out)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Errorf("%s: %v, want killed by SIGSYS\n%s", call, ee, out)
			}
			if strings.Contains(string(out), "survived") {
				t.Errorf("%s: survived\n%s", call, out)
			}
		})
	}
}
