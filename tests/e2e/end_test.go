package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
)

// sluicectl runs the admin CLI against the suite.
func sluicectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(env.Bin, "sluicectl"), args...)
	cmd.Env = env.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// findProc returns the pid whose command line is exactly argv, 0 if none
// is alive (zombies count as gone).
func findProc(argv ...string) int {
	want := strings.Join(argv, "\x00") + "\x00"
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && string(b) == want && procAlive(pid) {
			return pid
		}
	}
	return 0
}

func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// TestAdminEndWhileAttached: `sluicectl sessions end` with the owner
// attached ends the shell's whole process tree (the shell, a child, and a
// child that left the session with setsid, which the session's cgroup
// catches), the viewer is told the session ended, and nothing is listed.
// Before the hangup helper, ptystore could not signal the root shell, the
// frontend's copy of the master kept it alive, and `end` said "ended".
func TestAdminEndWhileAttached(t *testing.T) {
	users(t)
	c := connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	// Unique arguments find the processes again from outside, even with
	// another run of this test on the machine.
	n := 1_000_000 + 2*(os.Getpid()%4_000_000)
	a1, a2 := strconv.Itoa(n), strconv.Itoa(n+1)
	c.typeText("sleep " + a1 + " & setsid sleep " + a2 + " </dev/null >/dev/null 2>&1 & echo shell-$$-up\r")
	c.until("-up")
	var shellPID, child, away int
	for deadline := time.Now().Add(5 * time.Second); child == 0 || away == 0; time.Sleep(20 * time.Millisecond) {
		child, away = findProc("sleep", a1), findProc("sleep", a2)
		if time.Now().After(deadline) {
			t.Fatalf("children not found: sleep %d, setsid sleep %d", child, away)
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat"); err == nil {
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
		shellPID, _ = strconv.Atoi(f[3]) // the session: the login shell
	}
	if shellPID <= 1 || !procAlive(shellPID) {
		t.Fatalf("shell pid %d", shellPID)
	}

	start := time.Now()
	out, err := sluicectl(t, "sessions", "end", id)
	took := time.Since(start)
	if err != nil || !strings.Contains(out, "ended "+id) {
		t.Fatalf("sluicectl sessions end: %v\n%s", err, out)
	}
	for _, p := range []struct {
		what string
		pid  int
	}{{"shell", shellPID}, {"child", child}, {"setsid child", away}} {
		if procAlive(p.pid) {
			t.Errorf("%s %d still running after `sessions end` returned", p.what, p.pid)
		}
	}
	t.Logf("sessions end took %v", took)

	// The attached owner is told.
	for {
		m := c.next()
		if m["t"] == "exit" {
			break
		}
	}
	out, err = sluicectl(t, "sessions", "--json")
	if err != nil {
		t.Fatalf("sluicectl sessions: %v\n%s", err, out)
	}
	var list []msg.SessionInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions --json %q: %v", out, err)
	}
	for _, s := range list {
		if s.ID == id {
			t.Fatalf("session %s still listed after end", id)
		}
	}
	// Ending it again is an honest failure.
	if out, err := sluicectl(t, "sessions", "end", id); err == nil {
		t.Fatalf("second end succeeded: %s", out)
	}
}

// TestHangupOnlyForPtystore: the hangup helper, reached by anyone but
// ptystore's uid ("ptystore to hangup") or the recording helper's ("record
// to hangup"), even root with their public build IDs, refuses.
func TestHangupOnlyForPtystore(t *testing.T) {
	m, err := buildid.Load(filepath.Join(env.RunDir, "build-ids.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{msg.ProtoPtyStoreToHangup, msg.ProtoRecordToHangup} {
		p, _ := msg.Lookup(proto)
		mine := rpc.Hello{Intent: msg.Intent(p, "client")}
		peer := rpc.Hello{Intent: msg.Intent(p, "server")}
		for _, h := range []struct {
			comp  string
			hello *rpc.Hello
		}{{p.Client, &mine}, {msg.Hangup, &peer}} {
			e, err := m.Lookup(h.comp, h.hello.Intent)
			if err != nil {
				t.Fatal(err)
			}
			h.hello.BuildID = e.BuildID
		}
		master, slave, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		cl := &rpc.Client{Path: filepath.Join(env.RunDir, "hangup.sock"), Hello: mine, Expect: peer}
		var rep msg.HangupSessionReply
		_, err = cl.Call(context.Background(), msg.Request{Op: msg.OpHangup}, []*os.File{master}, &rep)
		master.Close()
		slave.Close()
		var re *rpc.RemoteError
		if !errors.As(err, &re) || re.Code != rpc.CodeForbidden {
			t.Fatalf("%s called as uid %d: %v, want forbidden", proto, unix.Getuid(), err)
		}
	}
}
