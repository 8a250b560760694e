package hangup

import (
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

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
	"sluice/internal/sessioncg"
)

// session starts script under sh as the leader of a new session whose
// controlling terminal is a fresh pty, optionally in cgroup cg, and
// returns the master. The script writes the pids it wants checked to
// the returned file, one per line, then "ready".
func session(t *testing.T, script string, cg *os.File) (*os.File, *exec.Cmd, string) {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	out := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command("/bin/sh", "-c", script, "sh", out)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if cg != nil {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cg.Fd())
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	go cmd.Wait()
	t.Cleanup(func() { cmd.Process.Kill() })
	// The pty must be drained or a chatty shell blocks.
	go func() {
		b := make([]byte, 4096)
		for {
			if _, err := m.Read(b); err != nil {
				return
			}
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(out); strings.HasSuffix(string(b), "ready\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session script never got ready")
		}
	}
	return m, cmd, out
}

func pids(t *testing.T, out string) []int {
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var ps []int
	for _, l := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(l); err == nil {
			ps = append(ps, n)
		}
	}
	return ps
}

// alive: the pid exists and is not a zombie.
func alive(pid int) bool {
	p, err := readStat("/proc", pid)
	return err == nil && !p.dead()
}

func TestEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a cgroup; CI runs as root")
	}
	cgroups := testCgroups(t)
	// Each script records: the leader, a background child, and for
	// "setsid" a grandchild that left the session.
	cases := []struct {
		name     string
		script   string
		inCgroup bool
		killed   bool // SIGHUP was not enough
		cgroup   bool // the cgroup was killed
	}{
		{"leader and child hang up", `echo $$ >"$1"; sleep 1000 & echo $! >>"$1"; echo ready >>"$1"; wait`, false, false, false},
		{"SIGHUP ignored, SIGKILL after the grace", `trap "" HUP; echo $$ >"$1"; sh -c 'trap "" HUP; echo $$ >>"$1"; exec sleep 1000' sh "$1" & sleep 0.1; echo ready >>"$1"; while :; do sleep 1; done`, false, true, false},
		{"setsid child, caught by the session's cgroup", `echo $$ >"$1"; setsid sh -c 'echo $$ >>"$1"; echo ready >>"$1"; exec sleep 1000' sh "$1" </dev/null >/dev/null 2>&1 & wait`, true, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cg *os.File
			cfg := Config{Grace: 300 * time.Millisecond}
			if c.inCgroup {
				if cgroups == "" {
					t.Skip("no cgroup v2 to make a session cgroup in")
				}
				var err error
				if cg, err = sessioncg.New(cgroups); err != nil {
					t.Fatal(err)
				}
				defer cg.Close()
				cfg.Cgroups = cgroups
			}
			m, _, out := session(t, c.script, cg)
			ps := pids(t, out)
			res, err := End(context.Background(), m, cfg)
			if err != nil {
				t.Fatalf("End: %v (%+v)", err, res)
			}
			if res.SID != ps[0] {
				t.Errorf("ended session %d, want %d", res.SID, ps[0])
			}
			if (res.Killed > 0) != c.killed || (res.Cgroup != "") != c.cgroup {
				t.Errorf("result %+v, want killed=%v cgroup=%v", res, c.killed, c.cgroup)
			}
			for _, p := range ps {
				if alive(p) {
					t.Errorf("pid %d still alive after End", p)
				}
			}
			if res.Cgroup != "" {
				if _, err := os.Stat(res.Cgroup); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("session cgroup %s left behind: %v", res.Cgroup, err)
				}
			}
		})
	}
}

// testCgroups makes a session-cgroups directory for the test below the
// cgroup v2 mount, or returns "" where there is none to write.
func testCgroups(t *testing.T) string {
	mount, err := sessioncg.Mount()
	if err != nil {
		return ""
	}
	own, err := sessioncg.Of(mount, "/proc", os.Getpid())
	if err != nil {
		return ""
	}
	dir := filepath.Join(own, fmt.Sprintf("sluice-hangup-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Logf("no test cgroups: %v", err)
		return ""
	}
	t.Cleanup(func() { sessioncg.Sweep(dir); os.Remove(dir) })
	return dir
}

func TestEndRefuses(t *testing.T) {
	devnull, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, f := range []*os.File{devnull, r} {
		if _, err := End(context.Background(), f, Config{}); !errors.Is(err, ErrRefused) {
			t.Errorf("End(%s): %v, want refused", f.Name(), err)
		}
	}
	// A pty no session controls: nothing to do, and nothing done.
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()
	if res, err := End(context.Background(), m, Config{}); err != nil || res.SID != 0 || res.Hungup != 0 {
		t.Errorf("End(fresh pty) = %+v, %v; want nothing done", res, err)
	}
}

// TestProtected: whatever pty led there, a session holding init, the
// helper's parent (the runner, systemd), the helper or a process of its
// own session is refused whole, before any signal.
func TestProtected(t *testing.T) {
	self, _ := unix.Getsid(0)
	other := proc{pid: 4000000, sid: 4000000}
	cases := []struct {
		name string
		p    proc
		ok   bool
	}{
		{"an unrelated session", other, true},
		{"init", proc{pid: 1, sid: 4000000}, false},
		{"the helper's parent", proc{pid: os.Getppid(), sid: 4000000}, false},
		{"the helper", proc{pid: os.Getpid(), sid: 4000000}, false},
		{"the helper's own session", proc{pid: 4000001, sid: self}, false},
	}
	for _, c := range cases {
		err := protected([]proc{other, c.p}, self)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and a ')' in it.
	line := "1234 (a) b (c)) S 1 1234 1234 34817 1234 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0"
	p, err := parseStat(1234, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if p.state != 'S' || p.ppid != 1 || p.pgrp != 1234 || p.sid != 1234 || p.tty != 34817 || p.start != 987654 {
		t.Fatalf("parsed %+v", p)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) SS 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"} {
		if _, err := parseStat(1, []byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}
