package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

// fullResult is what a fullMain child reports.
type fullResult struct {
	Held    int    `json:"held"` // connections to ptystore it held during the create
	Busy    int    `json:"busy"` // of those, how many ptystore turned away as busy
	Code    string `json:"code"`
	Err     string `json:"err"`
	FDs     int    `json:"fds"`
	Session string `json:"session"`
}

// fullMain is a compromised frontend that fills ptystore's connections
// ($CALL_HOLD of them, sending nothing: each is a slot of ptystore's
// --max-conns until its deadline) and then calls create-shell-session
// with $CALL_ARGS, so that policy's pty-put finds ptystore busy.
func fullMain() int {
	var res fullResult
	n, _ := strconv.Atoi(os.Getenv("CALL_HOLD"))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("unix", suite.SocketPath(msg.PtyStore))
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	res.Held = len(conns)
	time.Sleep(300 * time.Millisecond) // ptystore accepts them all
	buf := make([]byte, 64)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if n, _ := c.Read(buf); strings.Contains(string(buf[:n]), "busy") {
			res.Busy++
		}
	}
	args, _ := base64.StdEncoding.DecodeString(os.Getenv("CALL_ARGS"))
	cl, err := frontendClient(msg.ProtoWebToPolicy)
	if err != nil {
		res.Err = err.Error()
	} else {
		var rep msg.CreateShellSessionReply
		fds, err := cl.Call(context.Background(), msg.Request{Op: msg.OpCreateShellSession, Args: args}, nil, &rep)
		for _, f := range fds {
			f.Close()
		}
		res.FDs, res.Session = len(fds), rep.Session.ID
		if err != nil {
			res.Code, res.Err = rpc.CodeOf(err), err.Error()
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	// Holding on until told: the test makes the admin's calls meanwhile.
	io.Copy(io.Discard, os.Stdin)
	return 0
}

var sessionCGRE = regexp.MustCompile(`msg="runner: per-session cgroups"[^\n]* dir=(\S+)`)

// sessionCgroups lists the per-session cgroups below the runner's
// directory. Every runner on the host in the same cgroup shares it (other
// suites' sessions show up too): see ours.
func sessionCgroups(t *testing.T) map[string]bool {
	t.Helper()
	m := sessionCGRE.FindStringSubmatch(env.Run.Log.String())
	if m == nil {
		t.Skip("the runner made no per-session cgroups on this host")
	}
	root := strings.Trim(m[1], `"`)
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]bool{}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "session-") {
			dirs[filepath.Join(root, e.Name())] = true
		}
	}
	return dirs
}

// ours is the processes in cgroup dir that descend from this suite's
// runner (which the shells' keepers are children of).
func ours(dir string) []int {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		for p, hops := pid, 0; p > 1 && hops < 16; hops++ {
			if p == env.Run.RunnerPID() {
				pids = append(pids, pid)
				break
			}
			st, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
			if err != nil {
				break
			}
			i := strings.LastIndexByte(string(st), ')')
			f := strings.Fields(string(st[i+1:]))
			if len(f) < 2 {
				break
			}
			p, _ = strconv.Atoi(f[1])
		}
	}
	return pids
}

// unheld waits up to wait for the processes of this suite's sessions that
// started since before (session cgroups) to be gone, except those of the
// sessions ptystore holds (held: their leaders' pids), and returns what
// is left.
func unheld(t *testing.T, before map[string]bool, held map[int]bool, wait time.Duration) []string {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(wait); ; time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		for dir := range sessionCgroups(t) {
			if before[dir] {
				continue
			}
			pids := ours(dir)
			if len(pids) == 0 || slices.ContainsFunc(pids, func(p int) bool { return held[p] }) {
				continue
			}
			left = append(left, fmt.Sprintf("%s %v", dir, pids))
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
	}
}

// TestCreateWhilePtyStoreFull is a compromised frontend that holds every
// connection ptystore serves at once (--max-conns), so that the pty-put
// policy makes inside its create would find ptystore busy: policy then
// fails the create and can only close its fd, a hangup, which a process
// ignoring SIGHUP or one that left the session outlives, where no
// `sessions end`, `users disable --end-sessions` or `on-revoke end`
// reaches it. The create must succeed, the session in ptystore, and no
// process of a session ptystore does not hold may be left.
func TestCreateWhilePtyStoreFull(t *testing.T) {
	users(t)
	g := directGrant(t, alice)
	quiet := quietRule(t)
	cgBefore := sessionCgroups(t)
	before := listed(t)
	asFrontendThen(t, msg.ProtoWebToPolicy, msg.OpAllowedTargets, msg.AllowedTargets{Grant: g}, nil, "") // makes childExe
	body, err := msgpack.Marshal(quiet(g))
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := frontendIDs(t)
	cmd := exec.Command(childExe, "-test.run=^$")
	cmd.Env = append(env.Env(), childEnv+"=call", "CALL_HOLD=1100", "CALL_ARGS="+base64.StdEncoding.EncodeToString(body))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	hold, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			hold.Close()
			cmd.Wait()
		}
	}
	defer release()
	var res fullResult
	if err := json.NewDecoder(stdout).Decode(&res); err != nil {
		t.Fatalf("child: %v", err)
	}
	t.Logf("create with %d connections to ptystore made by the frontend's uid (%d turned away busy): code %q (%s), %d fds", res.Held, res.Busy, res.Code, res.Err, res.FDs)
	if res.Busy == 0 {
		t.Fatal("ptystore served every connection the frontend made: it was never full")
	}
	// Still held: the admin lists and ends through their own slots.
	held := map[int]bool{}
	var fresh []string
	for id, s := range listed(t) {
		held[int(s.PID)] = true
		if _, old := before[id]; !old && s.Owner == "alice" {
			fresh = append(fresh, id)
		}
	}
	if res.Code != "" || len(fresh) != 1 {
		t.Errorf("create with ptystore's connections held by the frontend: code %q, %d new sessions of alice's in ptystore; want it stored", res.Code, len(fresh))
	}
	for _, id := range fresh {
		if out, err := sluicectl(t, "sessions", "end", id); err != nil {
			t.Errorf("sessions end %s while the frontend holds ptystore's connections: %v\n%s", id, err, out)
			t.Cleanup(func() { sluicectl(t, "sessions", "end", id) })
		}
	}
	release()
	if left := unheld(t, cgBefore, held, 5*time.Second); len(left) > 0 {
		t.Errorf("processes of sessions ptystore does not hold: %v", left)
	}
}
