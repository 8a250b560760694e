package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/helpers/record/recordtest"
	"sluice/msg"
	"sluice/rpc"
)

// Recorded sessions under `sluice run`: the policy says record, the
// shell helper puts the recording helper between the shell's pty and the
// one ptystore and the frontend get, and every recording the tests make
// must parse with `asciinema cat` and verify with `sluicectl recordings
// verify`.

const recordPolicy = `# e2e policy, recorded
allow alice as root on .host record
allow bob as root on .host record input
allow bob as sl13e2e on .host
deny * as * on *
`

func recording(t *testing.T) {
	t.Helper()
	users(t)
	writePolicy(t, recordPolicy)
	t.Cleanup(func() { writePolicy(t, policyFile) })
}

func recordingsDir() string { return filepath.Join(env.Run.StateDir, "record", "recordings") }

// cast is a recording as exported by sluicectl.
type cast struct {
	raw    []byte
	header map[string]any
	o, i   string
	r      []string
}

func export(t *testing.T, id string) cast {
	t.Helper()
	path := filepath.Join(t.TempDir(), id+".cast")
	if out, err := sluicectl(t, "recordings", "export", id, "-o", path); err != nil {
		t.Fatalf("recordings export: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := cast{raw: b}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for n := 0; sc.Scan(); n++ {
		if n == 0 {
			if err := json.Unmarshal(sc.Bytes(), &c.header); err != nil {
				t.Fatalf("header %q: %v", sc.Text(), err)
			}
			continue
		}
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("line %d %q: %v", n+1, sc.Text(), err)
		}
		data, _ := ev[2].(string)
		switch ev[1] {
		case "o":
			c.o += data
		case "i":
			c.i += data
		case "r":
			c.r = append(c.r, data)
		}
	}
	// Every recording a test makes must be one asciinema reads, and its
	// output what asciinema prints.
	if out := recordtest.Cat(t, path); string(out) != c.o {
		t.Fatalf("asciinema cat printed %d bytes, the o events hold %d", len(out), len(c.o))
	}
	return c
}

// verify polls `sluicectl recordings verify` until it says want.
func verify(t *testing.T, id, want string) msg.RecVerifyReply {
	t.Helper()
	var v msg.RecVerifyReply
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _ := sluicectl(t, "recordings", "verify", "--json", id)
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("recordings verify: %q: %v", out, err)
		}
		if v.State == want {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("recording %s: %s (%s), want %s", id, v.State, v.Detail, want)
		}
	}
}

// exit ends the shell from the page and returns every byte the page got.
func (c *client) exit() []byte {
	c.t.Helper()
	c.typeText("exit\r")
	for {
		if m := c.next(); m["t"] == "exit" {
			break
		}
	}
	c.drain()
	return c.all.Bytes()
}

// A recorded session's o events are exactly the bytes the page received,
// a resize is an r event, nothing typed is recorded under plain `record`,
// and the recording is listed, verifies intact and plays.
func TestRecordingMatchesPage(t *testing.T) {
	recording(t)
	c := connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	c.typeText("echo rec-$((6*7)) 'grüße ✓'\r")
	c.until("rec-42 grüße ✓")
	c.send(map[string]any{"t": "resize", "cols": 91, "rows": 33})
	c.typeText("stty size; printf 'typed-%s\\n' secret\r")
	c.until("33 91")
	c.until("typed-secret")
	page := c.exit()

	v := verify(t, id, msg.RecIntact)
	rec := export(t, id)
	if rec.o != string(page) {
		t.Fatalf("the o events (%d bytes) are not what the page received (%d bytes):\n%q\n%q", len(rec.o), len(page), rec.o, page)
	}
	if !strings.Contains(strings.Join(rec.r, ","), "91x33") {
		t.Fatalf("no r event for 91x33: %v", rec.r)
	}
	if rec.i != "" {
		t.Fatalf("plain record recorded input: %q", rec.i)
	}
	if rec.header["title"] != "root@.host" || rec.header["version"] != float64(2) {
		t.Fatalf("header %v", rec.header)
	}
	if env, _ := rec.header["env"].(map[string]any); env["TERM"] == "" {
		t.Fatalf("header env %v", rec.header["env"])
	}
	if v.Size != int64(len(rec.raw)) {
		t.Fatalf("verify covers %d bytes, the file has %d", v.Size, len(rec.raw))
	}

	out, err := sluicectl(t, "recordings", "list", "--user", "alice", "--json")
	if err != nil {
		t.Fatalf("recordings list: %v\n%s", err, out)
	}
	var list []msg.Recording
	json.Unmarshal([]byte(out), &list)
	found := false
	for _, r := range list {
		if r.ID == id {
			found = r.Requester == "alice" && r.UnixUser == "root" && r.Machine == ".host" && !r.Live && !r.Input
		}
	}
	if !found {
		t.Fatalf("recording %s not listed as alice's, ended: %s", id, out)
	}
	cmd := exec.Command(filepath.Join(env.Bin, "sluicectl"), "recordings", "play", "--speed", "1000", id)
	cmd.Env = env.Env()
	played, err := cmd.Output()
	if err != nil || string(played) != rec.o {
		t.Fatalf("recordings play: %v: %d bytes, want %d", err, len(played), len(rec.o))
	}
}

// `record input` records what was typed as i events.
func TestRecordInput(t *testing.T) {
	recording(t)
	c := connect(t)
	c.signIn(bob)
	id := sessionID(c.create(80, 24))
	c.typeText("echo in-$((40+2))\r")
	c.until("in-42")
	page := c.exit()
	verify(t, id, msg.RecIntact)
	rec := export(t, id)
	if rec.i != "echo in-$((40+2))\rexit\r" {
		t.Fatalf("i events %q", rec.i)
	}
	if rec.o != string(page) {
		t.Fatal("o events differ from the page's bytes")
	}
}

// recorderPID finds the recording helper process writing id.
func recorderPID(t *testing.T, id string) int {
	t.Helper()
	want := filepath.Join(recordingsDir(), id+".cast")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, p := range env.Run.Children() {
			if p.Name != "sluice-record" {
				continue
			}
			fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", p.PID))
			for _, fd := range fds {
				if l, _ := os.Readlink(fd); l == want {
					return p.PID
				}
			}
		}
	}
	t.Fatalf("no sluice-record process holds %s", want)
	return 0
}

// asFrontendRun runs argv with the frontend's uid and gid and returns
// its combined output and error.
func asFrontendRun(t *testing.T, argv ...string) (string, error) {
	t.Helper()
	uid, gid := frontendIDs(t)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A compromised frontend (its uid, every public build ID) cannot start,
// stop, read or rewrite a recording: it cannot speak as the shell or the
// admin to the recording helper, cannot open, truncate or remove the file,
// cannot signal the recorder, and ending or crashing its own side leaves
// a sealed recording.
func TestRecordingOutOfFrontendReach(t *testing.T) {
	recording(t)
	c := connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	c.typeText("echo before-$((1+1))\r")
	c.until("before-2")
	path := filepath.Join(recordingsDir(), id+".cast")
	pid := recorderPID(t, id)

	for _, call := range []struct {
		proto, op string
		args      any
		want      string
	}{
		// As the shell: a second recording of the same id, or one of its
		// own choosing.
		{msg.ProtoShellToRecord, msg.OpRecordSession, msg.RecordSession{Session: id, UnixUser: "root", Machine: ".host"}, rpc.CodeForbidden},
		{msg.ProtoAdminToRecord, msg.OpRecVerify, msg.RecVerify{ID: id}, rpc.CodeForbidden},
		{msg.ProtoAdminToRecord, msg.OpRecList, msg.RecList{}, rpc.CodeForbidden},
		{msg.ProtoWebToRecord, msg.OpRecVerify, msg.RecVerify{ID: id}, rpc.CodeBadRequest},
		{msg.ProtoWebToRecord, msg.OpRecOpen, msg.RecOpen{ID: id}, msg.CodeBadGrant},
		{msg.ProtoWebToRecord, msg.OpRecList, msg.RecList{}, msg.CodeBadGrant},
	} {
		if _, code := asFrontend(t, call.proto, call.op, call.args, nil); code != call.want {
			t.Errorf("%s %s as the frontend: %q, want %q", call.proto, call.op, code, call.want)
		}
	}
	for _, argv := range [][]string{
		{"/bin/sh", "-c", "cat " + path},
		{"/bin/sh", "-c", ": > " + path},
		{"/bin/rm", "-f", path},
		{"/bin/kill", "-KILL", strconv.Itoa(pid)},
		{"/bin/kill", "-STOP", strconv.Itoa(pid)},
	} {
		if out, err := asFrontendRun(t, argv...); err == nil {
			t.Errorf("%v as the frontend succeeded: %s", argv, out)
		}
	}
	if !procAlive(pid) {
		t.Fatal("the recorder is gone")
	}
	// The frontend crashes: the session and its recording go on.
	if err := killFrontend(); err != nil {
		t.Fatal(err)
	}
	if err := startFrontend(); err != nil {
		t.Fatal(err)
	}
	c = connect(t)
	c.signIn(alice)
	c.attach(id, "")
	c.typeText("echo after-$((2+2))\r")
	c.until("after-4")
	c.exit()
	verify(t, id, msg.RecIntact)
	rec := export(t, id)
	if !strings.Contains(rec.o, "before-2") || !strings.Contains(rec.o, "after-4") {
		t.Fatalf("recording misses output from before or after the frontend's crash")
	}
}

// kill -9 of ptystore leaves the session and its recording going; kill
// -9 of the recorder ends the session (nothing goes on unrecorded) and
// leaves a recording that parses and whose every byte is sealed.
func TestRecordingKills(t *testing.T) {
	recording(t)
	t.Run("ptystore", func(t *testing.T) {
		c := connect(t)
		c.signIn(alice)
		id := sessionID(c.create(80, 24))
		c.typeText("echo one-$((0+1))\r")
		c.until("one-1")
		pid, err := env.Run.WaitChild("sluice-ptystore")
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Run.Kill(pid); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Run.WaitChild("sluice-ptystore", pid); err != nil {
			t.Fatal(err)
		}
		c.typeText("echo two-$((1+1))\r")
		c.until("two-2")
		c.exit()
		verify(t, id, msg.RecIntact)
		if rec := export(t, id); !strings.Contains(rec.o, "two-2") {
			t.Fatal("output after ptystore's restart not recorded")
		}
	})
	t.Run("recorder", func(t *testing.T) {
		c := connect(t)
		c.signIn(alice)
		id := sessionID(c.create(80, 24))
		c.typeText("echo three-$((1+2))\r")
		c.until("three-3")
		if err := syscall.Kill(recorderPID(t, id), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for {
			if m := c.next(); m["t"] == "exit" {
				break
			}
		}
		v := verify(t, id, msg.RecCut)
		rec := export(t, id)
		if v.Sealed != int64(len(rec.raw)) || !strings.Contains(rec.o, "three-3") {
			t.Fatalf("after kill -9 of the recorder: %+v, file %d bytes", v, len(rec.raw))
		}
	})
}

// A full filesystem ends a fail-closed session with a message on the
// page, and the recording that could not grow, and the ones before it,
// still parse and verify.
func TestRecordingDiskFull(t *testing.T) {
	recording(t)
	dir := recordingsDir()
	// The state directory is the recording helper's; recordings/ below
	// it is made on the first recording.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Dir(dir), &st); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(dir, 0o700)
	os.Chown(dir, int(st.Uid), int(st.Gid))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=256k,mode=0700,uid=%d,gid=%d", st.Uid, st.Gid), "sluice-rec-full", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })

	c := connect(t)
	c.signIn(alice)
	first := sessionID(c.create(80, 24))
	c.typeText("echo first\r")
	c.until("first")
	c.exit()
	verify(t, first, msg.RecIntact)
	before := export(t, first)

	c = connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	c.typeText("head -c 1000000 /dev/zero | tr '\\0' x; echo\r")
	c.until("no space left on device")
	for {
		if m := c.next(); m["t"] == "exit" {
			break
		}
	}
	v := verify(t, id, msg.RecCut)
	rec := export(t, id)
	if v.Sealed != int64(len(rec.raw)) || v.Sealed == 0 {
		t.Fatalf("full disk: %+v, file %d bytes", v, len(rec.raw))
	}
	verify(t, first, msg.RecIntact)
	if after := export(t, first); !bytes.Equal(after.raw, before.raw) {
		t.Fatal("an earlier recording changed when the disk filled")
	}

}

// `sluicectl sessions end` of a recorded session ends it completely: the
// shell, a child, a child that left the session with setsid (which only
// the shell session's cgroup catches) and a nohup child (SIGHUP ignored:
// SIGKILL after the grace) are all gone when `end` returns, and the
// recording is sealed with its end. The hangup helper
// signals the session of the pty ptystore holds, whose leader is the
// recorder; the recorder seals the end and hands the shell's master to
// the hangup helper ("record to hangup"), which ends the shell's own
// session as it would an unrecorded one. Before the hand-over the setsid
// child survived: only the pty hangup reached the shell's session.
func TestRecordedSessionEnd(t *testing.T) {
	recording(t)
	c := connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	n := 1_000_000 + 3*(os.Getpid()%3_000_000) + 1
	a1, a2, a3 := strconv.Itoa(n), strconv.Itoa(n+1), strconv.Itoa(n+2)
	c.typeText("sleep " + a1 + " & setsid sleep " + a2 + " </dev/null >/dev/null 2>&1 & nohup sleep " + a3 + " </dev/null >/dev/null 2>&1 & echo up-$((1+1))\r")
	c.until("up-2")
	var child, away, deaf int
	for deadline := time.Now().Add(5 * time.Second); child == 0 || away == 0 || deaf == 0; time.Sleep(20 * time.Millisecond) {
		child, away, deaf = findProc("sleep", a1), findProc("sleep", a2), findProc("sleep", a3)
		if time.Now().After(deadline) {
			t.Fatalf("children not found: sleep %d, setsid sleep %d, nohup sleep %d", child, away, deaf)
		}
	}
	shellPID := 0
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat"); err == nil {
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
		shellPID, _ = strconv.Atoi(f[3])
	}
	if shellPID <= 1 || !procAlive(shellPID) {
		t.Fatalf("shell pid %d", shellPID)
	}
	t.Cleanup(func() {
		for _, p := range []int{child, away, deaf} {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})
	if out, err := sluicectl(t, "sessions", "end", id); err != nil || !strings.Contains(out, "ended "+id) {
		t.Fatalf("sessions end: %v\n%s", err, out)
	}
	for _, p := range []struct {
		what string
		pid  int
	}{{"shell", shellPID}, {"child", child}, {"setsid child", away}, {"nohup child", deaf}} {
		if procAlive(p.pid) {
			t.Errorf("%s %d still running after `sessions end` returned", p.what, p.pid)
		}
	}
	for {
		if m := c.next(); m["t"] == "exit" {
			break
		}
	}
	verify(t, id, msg.RecIntact)
	export(t, id)
}
