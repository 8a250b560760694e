package e2e

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
	"sluice/tests/softauthn"
)

// The revocation tests hold a grant of their own, obtained as the
// frontend obtains one (login-begin, the authenticator, login-finish on
// "web to auth" from the frontend's uid), and call policy and ptystore
// with it directly, as a compromised frontend that kept a revoked grant
// would. The frontend's own grant never leaves its memory, so a grant of
// the same user and passkey, signed in just before, stands for it.

// childEnv selects the child mode of the test binary: one helper call as
// the uid the parent started it with.
const childEnv = "SLUICE_E2E_CHILD"

type childResult struct {
	Reply []byte `json:"reply"` // msgpack
	FDs   int    `json:"fds"`
	Code  string `json:"code"`
	Err   string `json:"err"`
	// Then is what $CALL_THEN's steps did with the reply's one fd
	// (record_hostile_test.go).
	Then string `json:"then"`
}

// childMain makes the call $CALL_OP on the protocol $CALL_PROTO as
// component "frontend", with $CALL_ARGS (base64 msgpack), and prints the
// result as JSON. The fds of the reply are counted and closed.
func childMain() int {
	if os.Getenv("CALL_TIMES") != "" {
		return burstMain()
	}
	if os.Getenv("CALL_HOLD") != "" {
		return fullMain()
	}
	var res childResult
	args, err := base64.StdEncoding.DecodeString(os.Getenv("CALL_ARGS"))
	if err != nil {
		res.Err = err.Error()
	} else if cl, err := frontendClient(os.Getenv("CALL_PROTO")); err != nil {
		res.Err = err.Error()
	} else {
		var raw msgpack.RawMessage
		fds, err := cl.Call(context.Background(), msg.Request{Op: os.Getenv("CALL_OP"), Args: args}, nil, &raw)
		if then := os.Getenv("CALL_THEN"); then != "" && err == nil && len(fds) == 1 {
			res.Then = childThen(fds[0], then)
		}
		for _, f := range fds {
			f.Close()
		}
		res.Reply, res.FDs = raw, len(fds)
		if err != nil {
			res.Code, res.Err = rpc.CodeOf(err), err.Error()
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// frontendClient is a client of proto with the frontend's public build ID
// from the manifest: what a compromised frontend knows.
func frontendClient(proto string) (*rpc.Client, error) {
	p, ok := msg.Lookup(proto)
	if !ok {
		return nil, fmt.Errorf("no protocol %q", proto)
	}
	m, err := suite.Manifest()
	if err != nil {
		return nil, err
	}
	mine := rpc.Hello{Intent: msg.Intent(p, "client")}
	peer := rpc.Hello{Intent: msg.Intent(p, "server")}
	for _, h := range []struct {
		comp  string
		hello *rpc.Hello
	}{{p.Client, &mine}, {p.Server, &peer}} {
		e, err := m.Lookup(h.comp, h.hello.Intent)
		if err != nil {
			return nil, err
		}
		h.hello.BuildID = e.BuildID
	}
	return &rpc.Client{Path: suite.SocketPath(p.Server), Hello: mine, Expect: peer}, nil
}

var (
	childOnce sync.Once
	childExe  string
	childErr  error
)

// frontendIDs is the uid and gid the runner gave the frontend.
func frontendIDs(t *testing.T) (uid, gid uint32) {
	t.Helper()
	pid := env.FrontendPID()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("frontend pid %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseUint(f[1], 10, 32)
		switch f[0] {
		case "Uid:":
			uid = uint32(n)
		case "Gid:":
			gid = uint32(n)
		}
	}
	if uid == 0 {
		t.Fatalf("frontend pid %d runs as root?", pid)
	}
	return uid, gid
}

// asFrontend makes one call to a helper from a process with the
// frontend's uid, which is all the helpers know of their caller. It
// returns the number of fds of the reply and the error code ("" if none).
func asFrontend(t *testing.T, proto, op string, args, reply any) (int, string) {
	t.Helper()
	fds, code, _ := asFrontendThen(t, proto, op, args, reply, "")
	return fds, code
}

// asFrontendThen is asFrontend, and the child then does then's steps
// with the reply's one fd (childThen) and returns what they did.
func asFrontendThen(t *testing.T, proto, op string, args, reply any, then string) (int, string, string) {
	t.Helper()
	childOnce.Do(func() {
		// go test builds the binary where only root may go; the suite's
		// directory is open to every uid.
		var b []byte
		if b, childErr = os.ReadFile(os.Args[0]); childErr == nil {
			childExe = filepath.Join(env.Dir, "e2e.test")
			childErr = os.WriteFile(childExe, b, 0o755)
		}
	})
	if childErr != nil {
		t.Fatal(childErr)
	}
	body, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := frontendIDs(t)
	cmd := exec.Command(childExe, "-test.run=^$")
	cmd.Env = append(env.Env(), childEnv+"=call", "CALL_PROTO="+proto, "CALL_OP="+op,
		"CALL_ARGS="+base64.StdEncoding.EncodeToString(body), "CALL_THEN="+then)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s as the frontend's uid %d: %v: %s", op, uid, err, out)
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%s: child said %q: %v", op, out, err)
	}
	if res.Code == "" && res.Err != "" {
		t.Fatalf("%s: %s", op, res.Err)
	}
	if res.Code == "" && reply != nil {
		if err := msgpack.Unmarshal(res.Reply, reply); err != nil {
			t.Fatalf("%s reply: %v", op, err)
		}
	}
	return res.FDs, res.Code, res.Then
}

// directGrant signs a in over "web to auth" from the frontend's uid.
func directGrant(t *testing.T, a *softauthn.Authenticator) msg.Grant {
	t.Helper()
	var begin msg.LoginBeginReply
	if _, code := asFrontend(t, msg.ProtoWebToAuth, msg.OpLoginBegin, msg.LoginBegin{}, &begin); code != "" {
		t.Fatalf("login-begin: %s", code)
	}
	as, err := a.Login(begin.Options)
	if err != nil {
		t.Fatal(err)
	}
	var fin msg.LoginFinishReply
	if _, code := asFrontend(t, msg.ProtoWebToAuth, msg.OpLoginFinish, msg.LoginFinish{State: begin.State, Assertion: as}, &fin); code != "" {
		t.Fatalf("login-finish: %s", code)
	}
	return fin.Grant
}

// grantWorks asks policy (create) and ptystore (pty-list, pty-get of id)
// with g and returns each one's error code, "" for success.
func grantWorks(t *testing.T, g msg.Grant, id string) map[string]string {
	t.Helper()
	codes := map[string]string{}
	// A shell nobody keeps: policy put it into ptystore, so it is
	// dropped again, leaving only the sessions the test counts.
	var made msg.CreateShellSessionReply
	fds, code := asFrontend(t, msg.ProtoWebToPolicy, msg.OpCreateShellSession,
		msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, &made)
	if code == "" && fds != 1 {
		code = fmt.Sprintf("%d fds", fds)
	}
	if code == "" {
		if _, c := asFrontend(t, msg.ProtoWebToPtyStore, msg.OpPtyDrop, msg.PtyDrop{Grant: g, ID: made.Session.ID}, nil); c != "" {
			t.Fatalf("pty-drop of the probe's session: %s", c)
		}
	}
	codes["create"] = code
	var list msg.PtyListReply
	_, code = asFrontend(t, msg.ProtoWebToPtyStore, msg.OpPtyList, msg.PtyList{Grant: g}, &list)
	if code == "" && !slices.ContainsFunc(list.Sessions, func(s msg.SessionInfo) bool { return s.ID == id }) {
		code = "session not listed"
	}
	codes["pty-list"] = code
	fds, code = asFrontend(t, msg.ProtoWebToPtyStore, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id}, nil)
	if code == "" && fds != 1 {
		code = fmt.Sprintf("%d fds", fds)
	}
	codes["pty-get"] = code
	return codes
}

var pidRE = regexp.MustCompile(`pid:(\d+):`)

// liveSession signs c in with a, opens a shell and returns its id and the
// shell's pid, which the shell prints itself.
func liveSession(t *testing.T, c *client, a *softauthn.Authenticator) (string, int) {
	t.Helper()
	c.signIn(a)
	id := sessionID(c.create(80, 24))
	c.typeText("echo \"p\"\"id:$$:\"\r")
	c.until(":\r\n")
	m := pidRE.FindStringSubmatch(c.all.String())
	if m == nil {
		t.Fatalf("no pid in %q", c.all.String())
	}
	pid, _ := strconv.Atoi(m[1])
	return id, pid
}

// revokeAndTime runs sluicectl args while c is idle and returns how long
// after the command started the frontend closed c's WebSocket, and the
// command's output. It fails unless the close carries "access revoked".
func revokeAndTime(t *testing.T, c *client, args ...string) (time.Duration, string) {
	t.Helper()
	c.drain()
	closed := make(chan time.Time, 1)
	go func() {
		for range c.msgs {
		}
		closed <- time.Now()
	}()
	go func() {
		for range c.out {
		}
	}()
	start := time.Now()
	out, err := sluicectl(t, args...)
	if err != nil {
		t.Fatalf("sluicectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var at time.Time
	select {
	case at = <-closed:
	case <-time.After(wait):
		t.Fatalf("sluicectl %s: the WebSocket stayed open", strings.Join(args, " "))
	}
	c.mu.Lock()
	cerr := c.closeErr
	c.mu.Unlock()
	var ce *websocket.CloseError
	if !errors.As(cerr, &ce) || ce.Code != 4001 || !strings.Contains(ce.Text, "access revoked") {
		t.Fatalf("the WebSocket ended with %v, want close 4001 access revoked", cerr)
	}
	return at.Sub(start), out
}

func wantCodes(t *testing.T, what string, got map[string]string, want string) {
	t.Helper()
	for _, op := range []string{"create", "pty-list", "pty-get"} {
		if got[op] != want {
			t.Errorf("%s: %s with the grant: %q, want %q", what, op, got[op], want)
		}
	}
}

func sessionListed(t *testing.T, id string) bool {
	t.Helper()
	out, err := sluicectl(t, "sessions", "--json")
	if err != nil {
		t.Fatalf("sluicectl sessions: %v\n%s", err, out)
	}
	var list []msg.SessionInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions --json %q: %v", out, err)
	}
	return slices.ContainsFunc(list, func(s msg.SessionInfo) bool { return s.ID == id })
}

// gone waits a moment for pid to exit: the end path returns once the
// signals are sent and the session's processes are reaped by others.
func gone(pid int) bool {
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !procAlive(pid) {
			return true
		}
	}
	return false
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestDisableUserRevokes: bob signs in, has a live shell and WebSocket;
// `sluicectl users disable bob` closes the WebSocket ("access revoked")
// within 1 s, and a grant of his signed in before is refused by policy
// (create) and ptystore (pty-list, pty-get), where it worked a moment
// before. Without --end-sessions the shell lives on (listed, running);
// `users enable bob` lets him sign in again and reattach, while the old
// grant stays refused. With --end-sessions the shell's process is gone
// and the session unlisted. Run three times for the latency's median.
//
// Before the revocation work none of this holds: there was no disable,
// and with the checks taken out of policy and ptystore (revoke.Checker)
// the old grant is served; without the frontend's watcher the socket
// stays open.
func TestDisableUserRevokes(t *testing.T) {
	users(t)
	t.Cleanup(func() { sluicectl(t, "users", "enable", "bob") })
	var lat []time.Duration
	const runs = 3
	for i := range runs {
		end := i == runs-1
		c := connect(t)
		id, shell := liveSession(t, c, bob)
		g := directGrant(t, bob)
		wantCodes(t, "before disable", grantWorks(t, g, id), "")

		args := []string{"users", "disable", "bob"}
		if end {
			args = append(args, "--end-sessions")
		}
		d, out := revokeAndTime(t, c, args...)
		lat = append(lat, d)
		t.Logf("run %d: `sluicectl %s` → WebSocket closed after %v", i, strings.Join(args, " "), d)
		if d > time.Second {
			t.Errorf("run %d: the WebSocket closed %v after the command started, want within 1 s", i, d)
		}
		wantCodes(t, "disabled", grantWorks(t, g, id), msg.CodeBadGrant)
		if m := connect(t).login(bob); m["t"] != "error" {
			t.Fatalf("a disabled user signed in: %v", m)
		}

		if end {
			if !strings.Contains(out, "ended 1 session(s): "+id) {
				t.Fatalf("disable --end-sessions said %q", out)
			}
			if !gone(shell) {
				t.Errorf("shell %d still running after disable --end-sessions", shell)
			}
			if sessionListed(t, id) {
				t.Errorf("session %s still listed after disable --end-sessions", id)
			}
		} else {
			if !procAlive(shell) || !sessionListed(t, id) {
				t.Fatalf("disable without --end-sessions ended session %s (shell %d alive: %v)", id, shell, procAlive(shell))
			}
		}

		if out, err := sluicectl(t, "users", "enable", "bob"); err != nil || !strings.Contains(out, "enabled bob") {
			t.Fatalf("users enable bob: %v\n%s", err, out)
		}
		// The old grant stays revoked: enabling draws a new line.
		if got := grantWorks(t, g, id); got["pty-list"] != msg.CodeBadGrant || got["create"] != msg.CodeBadGrant {
			t.Errorf("the grant from before the disable, after enable: %v", got)
		}
		c2 := connect(t)
		c2.signIn(bob)
		if !end {
			c2.attach(id, "")
			c2.typeText("echo back-$((40+2))\r")
			c2.until("back-42")
			c2.send(map[string]any{"t": "end", "id": id})
			c2.expect("ended")
		}
		c2.ws.Close()
	}
	t.Logf("users disable → WebSocket closed: median %v of %v", median(lat), lat)
}

// TestRevokePasskeyRevokes: the same for `sluicectl passkeys revoke bob
// ID` of the passkey bob's tab signed in with: the socket closes within
// 1 s, the grants of that passkey are refused by policy and ptystore, and
// bob's other passkey still signs in and reaches the session (kept), or
// finds it ended with --end-sessions.
func TestRevokePasskeyRevokes(t *testing.T) {
	users(t)
	var lat []time.Duration
	const runs = 3
	for i := range runs {
		end := i == runs-1
		// A second passkey for bob, on a device of its own.
		dev := softauthn.New("localhost", env.origin)
		c := connect(t)
		c.register(dev, enroll(t, "bob"))
		c.ws.Close()
		credID := hex.EncodeToString(dev.Credentials()[0].ID)

		c = connect(t)
		id, shell := liveSession(t, c, dev)
		g := directGrant(t, dev)
		if hex.EncodeToString(g.Credential) != credID {
			t.Fatalf("the grant names passkey %x, want %s", g.Credential, credID)
		}
		wantCodes(t, "before revoke", grantWorks(t, g, id), "")

		args := []string{"passkeys", "revoke", "bob", credID}
		if end {
			args = append(args, "--end-sessions")
		}
		d, out := revokeAndTime(t, c, args...)
		lat = append(lat, d)
		t.Logf("run %d: `sluicectl %s` → WebSocket closed after %v", i, strings.Join(args[:3], " "), d)
		if d > time.Second {
			t.Errorf("run %d: the WebSocket closed %v after the command started, want within 1 s", i, d)
		}
		wantCodes(t, "passkey revoked", grantWorks(t, g, id), msg.CodeBadGrant)
		if m := connect(t).login(dev); m["t"] != "error" {
			t.Fatalf("a revoked passkey signed in: %v", m)
		}

		// bob's first passkey is untouched.
		other := directGrant(t, bob)
		got := grantWorks(t, other, id)
		if end {
			if !strings.Contains(out, "ended 1 session(s): "+id) {
				t.Fatalf("passkeys revoke --end-sessions said %q", out)
			}
			if !gone(shell) {
				t.Errorf("shell %d still running after passkeys revoke --end-sessions", shell)
			}
			if got["create"] != "" || got["pty-list"] != "session not listed" || got["pty-get"] != msg.CodeNotFound {
				t.Errorf("bob's other passkey after revoke --end-sessions: %v", got)
			}
		} else {
			wantCodes(t, "bob's other passkey", got, "")
			c2 := connect(t)
			c2.signIn(bob)
			c2.attach(id, "")
			c2.typeText("echo still-$((40+2))\r")
			c2.until("still-42")
			c2.send(map[string]any{"t": "end", "id": id})
			c2.expect("ended")
			c2.ws.Close()
		}
	}
	t.Logf("passkeys revoke → WebSocket closed: median %v of %v", median(lat), lat)
}
