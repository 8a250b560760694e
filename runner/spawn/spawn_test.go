package spawn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
)

// run starts argv with stdout on a pipe and returns what it printed and
// its wait status.
func run(t *testing.T, a Attr) (string, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a.Files = append([]syscall.Conn{nil, w, w}, a.Files...)
	if a.Umask == 0 {
		a.Umask = -1
	}
	p, err := Start(&a)
	w.Close()
	if err != nil {
		t.Fatalf("Start %v: %v", a.Args, err)
	}
	out, _ := io.ReadAll(r)
	return string(out), Describe(p.Wait())
}

func TestListenPIDAndFDs(t *testing.T) {
	// fd 3 is a pipe the child writes through; LISTEN_PID must be the pid
	// of the process reading it, which for sh -c is $$.
	r3, w3, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	out, st := run(t, Attr{
		Path: "/bin/sh", Args: []string{"sh", "-c", `echo "$$ $LISTEN_PID $FOO"; echo via-fd3 >&3`},
		Env: []string{"FOO=bar", "PATH=/usr/bin:/bin"}, ListenPID: true, Files: []syscall.Conn{w3},
	})
	w3.Close()
	if st != "exit 0" {
		t.Fatalf("status %s, output %q", st, out)
	}
	f := strings.Fields(out)
	if len(f) != 3 || f[0] != f[1] || f[2] != "bar" {
		t.Fatalf("child printed %q: want its own pid twice and bar", out)
	}
	b, _ := io.ReadAll(r3)
	if string(b) != "via-fd3\n" {
		t.Fatalf("fd 3 carried %q", b)
	}
}

func TestManyConcurrentSpawnsEachSeeTheirOwnPID(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, w, err := os.Pipe()
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			p, err := Start(&Attr{Path: "/bin/sh", Args: []string{"sh", "-c", `echo "$$ $LISTEN_PID"`},
				ListenPID: true, Files: []syscall.Conn{nil, w}, Umask: -1})
			w.Close()
			if err != nil {
				errs <- err
				return
			}
			out, _ := io.ReadAll(r)
			p.Wait()
			f := strings.Fields(string(out))
			if len(f) != 2 || f[0] != f[1] || f[0] != strconv.Itoa(p.Pid) {
				errs <- fmt.Errorf("pid %d printed %q", p.Pid, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// statusField returns a "Name:\tvalue" line's value from /proc/PID/status.
func statusField(status, name string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestSignalsSessionDirUmask(t *testing.T) {
	// We ignore SIGHUP and Go handles nearly every signal; the child must
	// start with no signal ignored, none blocked, in a session of its own.
	signal.Ignore(syscall.SIGHUP)
	defer signal.Reset(syscall.SIGHUP)
	dir := t.TempDir()
	out, st := run(t, Attr{
		Path: "/bin/sh", Args: []string{"sh", "-c", `exec /bin/cat /proc/self/stat /proc/self/status`},
		Setsid: true, Dir: dir, Umask: 0o027,
	})
	if st != "exit 0" {
		t.Fatalf("status %s", st)
	}
	stat, status, _ := strings.Cut(out, "\n")
	for _, f := range []string{"SigBlk", "SigIgn"} {
		if v := statusField(status, f); strings.Trim(v, "0") != "" {
			t.Errorf("%s = %s in the child, want none", f, v)
		}
	}
	if v := statusField(status, "Umask"); v != "0027" {
		t.Errorf("umask %s, want 0027", v)
	}
	// pid (comm) state ppid pgrp session
	rest := stat[strings.LastIndexByte(stat, ')')+2:]
	f := strings.Fields(rest)
	pid := strings.Fields(stat)[0]
	if f[2] != pid || f[3] != pid {
		t.Errorf("pgrp %s session %s, want both %s", f[2], f[3], pid)
	}
	// Setpgid: a process group of its own, in our session.
	out, _ = run(t, Attr{Path: "/bin/cat", Args: []string{"cat", "/proc/self/stat"}, Setpgid: true})
	f = strings.Fields(out[strings.LastIndexByte(out, ')')+2:])
	pid = strings.Fields(out)[0]
	if ourSid, _ := unix.Getsid(0); f[2] != pid || f[3] != fmt.Sprint(ourSid) {
		t.Errorf("Setpgid: pgrp %s session %s, want %s and ours %d", f[2], f[3], pid, ourSid)
	}
	out, _ = run(t, Attr{Path: "/bin/sh", Args: []string{"sh", "-c", "pwd"}, Dir: dir})
	if strings.TrimSpace(out) != dir {
		t.Errorf("pwd %q, want %s", out, dir)
	}
}

func TestCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching uid needs root (CI runs as root)")
	}
	out, st := run(t, Attr{
		Path: "/bin/sh", Args: []string{"sh", "-c", "echo $(id -u) $(id -g) $(id -G)"},
		Env:        []string{"PATH=/usr/bin:/bin"},
		Credential: &syscall.Credential{Uid: 65534, Gid: 65533, Groups: []uint32{65533, 100}},
	})
	if st != "exit 0" || strings.TrimSpace(out) != "65534 65533 65533 100" {
		t.Fatalf("status %s, id says %q", st, out)
	}
}

func TestFailuresBeforeExec(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "data")
	os.WriteFile(notExec, []byte("just data"), 0o644)
	for _, tc := range []struct {
		name string
		a    Attr
		step string
		err  error
	}{
		{"missing binary", Attr{Path: filepath.Join(dir, "nope"), Args: []string{"nope"}}, "execve", syscall.ENOENT},
		{"not executable", Attr{Path: notExec, Args: []string{"data"}}, "execve", syscall.EACCES},
		{"bad dir", Attr{Path: "/bin/true", Args: []string{"true"}, Dir: filepath.Join(dir, "nodir")}, "chdir", syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.a.Umask = -1
			_, err := Start(&tc.a)
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Step != tc.step || !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want step %s %v", err, tc.step, tc.err)
			}
		})
	}
}

func TestSubreaperReapsOrphans(t *testing.T) {
	if err := SetSubreaper(); err != nil {
		t.Fatal(err)
	}
	before := OrphansReaped()
	// sh leaves a background child behind and exits: that grandchild is
	// reparented to us and must be reaped when it exits, not left a zombie.
	out, st := run(t, Attr{Path: "/bin/sh", Args: []string{"sh", "-c", "sleep 0.2 >/dev/null 2>&1 & echo $!"}})
	if st != "exit 0" {
		t.Fatalf("status %s", st)
	}
	orphan := strings.TrimSpace(out)
	b, err := os.ReadFile("/proc/" + orphan + "/stat")
	if err == nil && !strings.Contains(string(b), fmt.Sprintf(" %d ", os.Getpid())) {
		t.Fatalf("orphan %s not reparented to us: %s", orphan, b)
	}
	// Wait (no timing asserted) until the orphan is gone for good.
	for {
		if _, err := os.Stat("/proc/" + orphan); os.IsNotExist(err) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if OrphansReaped() <= before {
		t.Fatalf("orphan %s vanished but the reaper did not count it", orphan)
	}
}

func TestSignal(t *testing.T) {
	r, w, _ := os.Pipe()
	defer r.Close()
	p, err := Start(&Attr{Path: "/bin/sh", Args: []string{"sh", "-c", "echo up; exec sleep 100"}, Files: []syscall.Conn{nil, w}, Umask: -1})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(r).ReadString('\n')
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := Describe(p.Wait()); st != "signal terminated" {
		t.Fatalf("status %s", st)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal after reaping: %v", err)
	}
}

// TestExecByFD: a binary in a directory the new uid cannot traverse (a
// checkout in /root) fails by path and runs by fd, and the fd runs the
// file that was opened even after another took its name.
func TestExecByFD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching uid needs root (CI runs as root)")
	}
	dir := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "id")
	src, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	_, err = Start(&Attr{Path: bin, Args: []string{"id", "-u"}, Credential: nobody, Umask: -1})
	if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("exec by path from a 0700 directory: %v, want EACCES", err)
	}
	fd, err := unix.Open(bin, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	exe := os.NewFile(uintptr(fd), bin)
	defer exe.Close()
	// Another file takes the name: the fd still runs id.
	if err := os.WriteFile(bin+".new", []byte("#!/bin/sh\necho swapped\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	// Many fds, so the exec fd's number is among the ones the child fills.
	files := make([]syscall.Conn, 8)
	out, st := run(t, Attr{Exec: exe, Args: []string{"id", "-u"}, Credential: nobody, Files: files})
	if st != "exit 0" || strings.TrimSpace(out) != "65534" {
		t.Fatalf("exec by fd: status %s, output %q", st, out)
	}
}

// TestOnlyItsOwnFDs: an fd this process holds without close-on-exec (as a
// runner started with 9</some/file does) does not reach the child.
func TestOnlyItsOwnFDs(t *testing.T) {
	leak, err := unix.Open("/etc/hostname", unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(leak)
	out, st := run(t, Attr{Path: "/bin/sh", Args: []string{"sh", "-c", "ls /proc/$$/fd"}, Env: []string{"PATH=/usr/bin:/bin"}})
	fds := strings.Fields(out)
	if st != "exit 0" || strings.Join(fds, " ") != "0 1 2" {
		t.Fatalf("status %s, child's fds %v (leaked %d), want 0 1 2", st, fds, leak)
	}
}

// ttyNr is field 7 of /proc/PID/stat as a child sees itself: its
// controlling terminal, 0 for none.
const ttyNr = `read -r line </proc/self/stat; set -- ${line##*) }; echo $5`

// TestNoCtty: under a parent that has a controlling terminal (setsid -c on
// a new pty), a child started with Setpgid keeps that terminal unless
// NoCtty is set. The parent is this test binary again, in noCttyChild.
func TestNoCtty(t *testing.T) {
	if os.Getenv("SPAWN_NOCTTY_CHILD") != "" {
		noCttyChild()
		return
	}
	setsid, err := exec.LookPath("setsid")
	if err != nil {
		t.Skip("setsid(1) (util-linux) not installed")
	}
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	go io.Copy(io.Discard, master)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(&Attr{
		Path: setsid, Args: []string{"setsid", "-c", self, "-test.run=^TestNoCtty$"},
		Env:   []string{"SPAWN_NOCTTY_CHILD=1", "PATH=/usr/bin:/bin"},
		Files: []syscall.Conn{slave, w, w}, Umask: -1,
	})
	w.Close()
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	st := Describe(p.Wait())
	out := string(b)
	var with, without string
	fmt.Sscanf(out, "keeps=%s detached=%s", &with, &without)
	if st != "exit 0" || with == "0" || with == "" || strings.HasPrefix(with, "error") || without != "0" {
		t.Fatalf("status %s, output %q: want keeps=<the pty> detached=0", st, out)
	}
}

func noCttyChild() {
	tty := func(noctty bool) string {
		r, w, _ := os.Pipe()
		p, err := Start(&Attr{Path: "/bin/sh", Args: []string{"sh", "-c", ttyNr}, Env: []string{"PATH=/usr/bin:/bin"},
			Files: []syscall.Conn{nil, w, w}, Setpgid: true, NoCtty: noctty, Umask: -1})
		w.Close()
		if err != nil {
			return "error:" + err.Error()
		}
		b, _ := io.ReadAll(r)
		p.Wait()
		return strings.TrimSpace(string(b))
	}
	fmt.Printf("keeps=%s detached=%s\n", tty(false), tty(true))
	os.Exit(0)
}
