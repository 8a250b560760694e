package systemd_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/tests/softauthn"
)

// Under real systemd, disabling a user (issue 12): alice signs in with a
// passkey through the auth helper (a software authenticator, the
// frontend's part played by the in-container driver), holds a session as
// its owner with a child and a setsid'd child, and `sluicectl users
// disable alice --end-sessions` runs as root in the container. Then the
// grant she signed in with is refused by policy (create) and ptystore
// (pty-list, pty-get), the shell and both children are gone when the
// command returns, she cannot sign in, and `users enable` lets her sign
// in again while the old grant stays void.

// grantDir is where the driver leaves the grants it got, for the one-shot
// client modes (the container's /run: a tmpfs of its own).
const grantDir = "/run/sluice-nspawn"

// driver is the client role that keeps a software authenticator for the
// whole test: its keys live in this process only. It reads one command a
// line on stdin and answers one line on stdout:
//
//	register TOKEN   -> OK USER CREDENTIAL-HEX
//	login NAME       -> OK FILE | REFUSED CODE (the grant kept as NAME and written to FILE)
//	open NAME        -> OK SESSION-ID (a shell that answered, handed to ptystore)
//	check NAME ID    -> OK create=C pty-list=C pty-get=C (C: ok, not-listed or the error code)
//
// and ERR TEXT for anything that is not a helper's refusal.
func driver(man *buildid.Manifest) error {
	d := &drv{man: man, dev: softauthn.New("localhost", "http://localhost:8080"), grants: map[string]msg.Grant{}}
	if err := os.MkdirAll(grantDir, 0o700); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Fprintf(os.Stderr, "driver: %s\n", in.Text())
		reply, err := d.do(strings.Fields(in.Text()))
		if err != nil {
			reply = "ERR " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
		fmt.Println(reply)
	}
	return in.Err()
}

type drv struct {
	man    *buildid.Manifest
	dev    *softauthn.Authenticator
	grants map[string]msg.Grant
}

func (d *drv) call(proto, op string, a any, fds []*os.File, reply any) ([]*os.File, error) {
	return frontendCall(d.man, proto, op, a, fds, reply)
}

// code is a helper's refusal code, or "" if err is not a refusal.
func code(err error) string {
	var re *rpc.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

func (d *drv) do(f []string) (string, error) {
	switch {
	case len(f) == 2 && f[0] == "register":
		var begin msg.RegisterBeginReply
		if _, err := d.call(msg.ProtoWebToAuth, msg.OpRegisterBegin, msg.RegisterBegin{Token: f[1]}, nil, &begin); err != nil {
			return "", fmt.Errorf("register-begin: %w", err)
		}
		cred, err := d.dev.Register(begin.Options)
		if err != nil {
			return "", err
		}
		var fin msg.RegisterFinishReply
		if _, err := d.call(msg.ProtoWebToAuth, msg.OpRegisterFinish,
			msg.RegisterFinish{Token: f[1], State: begin.State, Credential: cred, Name: "nspawn"}, nil, &fin); err != nil {
			return "", fmt.Errorf("register-finish: %w", err)
		}
		return fmt.Sprintf("OK %s %x", fin.User, fin.CredentialID), nil
	case len(f) == 2 && f[0] == "login":
		var begin msg.LoginBeginReply
		if _, err := d.call(msg.ProtoWebToAuth, msg.OpLoginBegin, msg.LoginBegin{}, nil, &begin); err != nil {
			return "", fmt.Errorf("login-begin: %w", err)
		}
		as, err := d.dev.Login(begin.Options)
		if err != nil {
			return "", err
		}
		var fin msg.LoginFinishReply
		if _, err := d.call(msg.ProtoWebToAuth, msg.OpLoginFinish, msg.LoginFinish{State: begin.State, Assertion: as}, nil, &fin); err != nil {
			if c := code(err); c != "" {
				return "REFUSED " + c, nil
			}
			return "", fmt.Errorf("login-finish: %w", err)
		}
		b, err := msgpack.Marshal(fin.Grant)
		if err != nil {
			return "", err
		}
		path := filepath.Join(grantDir, f[1]+".grant")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return "", err
		}
		d.grants[f[1]] = fin.Grant
		return "OK " + path, nil
	case len(f) == 2 && f[0] == "open":
		g, ok := d.grants[f[1]]
		if !ok {
			return "", fmt.Errorf("no grant %q", f[1])
		}
		var rep msg.CreateShellSessionReply
		fds, err := d.call(msg.ProtoWebToPolicy, msg.OpCreateShellSession,
			msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, nil, &rep)
		if err != nil {
			return "", fmt.Errorf("create-shell-session: %w", err)
		}
		if len(fds) != 1 {
			return "", fmt.Errorf("%d fds from policy", len(fds))
		}
		defer fds[0].Close()
		put := msg.PtyPutReply{Session: rep.Session} // policy put it
		if err := answers(fds[0], true); err != nil {
			return "", err
		}
		return "OK " + put.Session.ID, nil
	case len(f) == 3 && f[0] == "check":
		g, ok := d.grants[f[1]]
		if !ok {
			return "", fmt.Errorf("no grant %q", f[1])
		}
		id := f[2]
		res := func(err error, good bool, bad string) (string, error) {
			switch {
			case err == nil && good:
				return "ok", nil
			case err == nil:
				return bad, nil
			case code(err) != "":
				return code(err), nil
			}
			return "", err
		}
		// A shell nobody keeps: policy put it into ptystore, so the probe
		// drops it again, leaving only the sessions the test counts.
		var made msg.CreateShellSessionReply
		fds, err := d.call(msg.ProtoWebToPolicy, msg.OpCreateShellSession,
			msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, nil, &made)
		for _, fd := range fds {
			fd.Close()
		}
		create, err := res(err, len(fds) == 1, strconv.Itoa(len(fds))+"-fds")
		if err != nil {
			return "", fmt.Errorf("create-shell-session: %w", err)
		}
		if create == "ok" {
			if _, err := d.call(msg.ProtoWebToPtyStore, msg.OpPtyDrop, msg.PtyDrop{Grant: g, ID: made.Session.ID}, nil, &msg.PtyDropReply{}); err != nil {
				return "", fmt.Errorf("pty-drop of the probe's session: %w", err)
			}
		}
		var list msg.PtyListReply
		_, err = d.call(msg.ProtoWebToPtyStore, msg.OpPtyList, msg.PtyList{Grant: g}, nil, &list)
		listed, err := res(err, slices.ContainsFunc(list.Sessions, func(s msg.SessionInfo) bool { return s.ID == id }), "not-listed")
		if err != nil {
			return "", fmt.Errorf("pty-list: %w", err)
		}
		fds, err = d.call(msg.ProtoWebToPtyStore, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id}, nil, &msg.PtyGetReply{})
		for _, fd := range fds {
			fd.Close()
		}
		get, err := res(err, len(fds) == 1, strconv.Itoa(len(fds))+"-fds")
		if err != nil {
			return "", fmt.Errorf("pty-get: %w", err)
		}
		return fmt.Sprintf("OK create=%s pty-list=%s pty-get=%s", create, listed, get), nil
	}
	return "", fmt.Errorf("unknown command %q", f)
}

// driven is the test's end of a driver running in the container.
type driven struct {
	t     *testing.T
	c     *container
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	done  chan struct{} // closed when the test is done reading
	err   strings.Builder
}

func startDriver(t *testing.T, c *container) *driven {
	t.Helper()
	d := &driven{t: t, c: c, lines: make(chan string), done: make(chan struct{})}
	d.cmd = exec.Command("nsenter", "-t", strconv.Itoa(c.init), "-a", "--", "env", clientEnv+"=1",
		"setpriv", "--groups=sluice-web,sluice-ptystore-callers", testDir+"/"+filepath.Base(os.Args[0]), "driver")
	d.cmd.Stderr = &d.err
	d.cmd.WaitDelay = 5 * time.Second
	var err error
	if d.in, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case d.lines <- sc.Text():
			case <-d.done:
				return
			}
		}
		close(d.lines)
	}()
	t.Cleanup(func() {
		// End of input ends it; a driver stuck in a call is killed.
		close(d.done)
		d.in.Close()
		exited := make(chan struct{})
		go func() { d.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			d.cmd.Process.Kill()
			<-exited
		}
	})
	return d
}

// ask sends one command and returns the answer without its "OK "; an
// answer that is neither OK nor REFUSED fails the test.
func (d *driven) ask(command string) string {
	d.t.Helper()
	if _, err := fmt.Fprintln(d.in, command); err != nil {
		d.t.Fatalf("driver: %s: %v", command, err)
	}
	select {
	case l, ok := <-d.lines:
		if !ok {
			d.t.Fatalf("driver: %s: it exited: %s", command, d.err.String())
		}
		if rest, ok := strings.CutPrefix(l, "OK "); ok {
			return rest
		}
		if strings.HasPrefix(l, "REFUSED ") {
			return l
		}
		d.t.Fatalf("driver: %s: %s", command, l)
	case <-time.After(time.Minute): // a bound on a wedged driver, not a timing assertion
		state, _ := d.c.run("sh", "-c", "loginctl list-sessions --no-pager; systemctl list-units --no-pager --all 'user*' 'session*'; ps -eo pid,sid,stat,wchan:20,args --forest | tail -40; journalctl --no-pager -n 60")
		d.cmd.Process.Kill()
		d.t.Fatalf("driver: %s: no answer in a minute: %s\nthe container:\n%s", command, d.err.String(), state)
	}
	return ""
}

// checked runs check and returns its codes by call.
func (d *driven) checked(name, id string) map[string]string {
	d.t.Helper()
	got := map[string]string{}
	for _, kv := range strings.Fields(d.ask("check " + name + " " + id)) {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	return got
}

func wantCodes(t *testing.T, what string, got map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s answered %q, want %q (all: %v)", what, k, got[k], v, got)
		}
	}
}

// disableWhileHeld is the scenario above, first without --end-sessions
// (the session is kept and reachable again after enable), then with it
// while the owner holds the session; token is an unused enrollment token
// for alice.
func disableWhileHeld(t *testing.T, c *container, token string) {
	d := startDriver(t, c)
	ctl := func(args ...string) string { return c.must(append([]string{prefix + "/bin/sluicectl"}, args...)...) }
	all := func(code string) map[string]string {
		return map[string]string{"create": code, "pty-list": code, "pty-get": code}
	}
	login := func(name string) string {
		t.Helper()
		f := d.ask("login " + name)
		if strings.HasPrefix(f, "REFUSED") {
			t.Fatalf("alice's sign-in %s: %s", name, f)
		}
		return f
	}
	disabled := func() {
		t.Helper()
		if l := d.ask("login refused"); l != "REFUSED "+msg.CodeDenied {
			t.Errorf("a disabled user's sign-in: %q, want REFUSED %s", l, msg.CodeDenied)
		}
		var us []struct {
			Name     string
			Disabled bool
		}
		if err := json.Unmarshal([]byte(ctl("users", "--json")), &us); err != nil || len(us) != 1 || !us[0].Disabled {
			t.Errorf("users --json: %v %+v, want alice disabled", err, us)
		}
	}
	enable := func() {
		t.Helper()
		if out := ctl("users", "enable", "alice"); !strings.Contains(out, "enabled alice") {
			t.Errorf("users enable: %s", out)
		}
	}

	reg := strings.Fields(d.ask("register " + token))
	if len(reg) != 2 || reg[0] != "alice" {
		t.Fatalf("register: %v", reg)
	}
	login("first")
	id := d.ask("open first")
	// The grant works before: the refusals below are the disable's.
	wantCodes(t, "before disable", d.checked("first", id), all("ok"))

	// Kept: the grant is refused at once, the session stays.
	began := time.Now()
	out := ctl("users", "disable", "alice")
	took := time.Since(began)
	wantCodes(t, "the grant after disable", d.checked("first", id), all(msg.CodeBadGrant))
	t.Logf("users disable: the command took %v; from its start to the grant refused by policy (create), ptystore (pty-list, pty-get): %v (nsenter included)",
		took.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if !strings.Contains(out, "disabled alice") || strings.Contains(out, "ended") {
		t.Errorf("users disable said %q", out)
	}
	if !strings.Contains(ctl("sessions", "--json"), id) {
		t.Errorf("users disable without --end-sessions dropped session %s", id)
	}
	disabled()
	enable()
	wantCodes(t, "the grant from before the disable, after enable", d.checked("first", id), all(msg.CodeBadGrant))
	grantFile := login("second")
	wantCodes(t, "a new grant after enable: the kept session", d.checked("second", id), all("ok"))

	// Ended: the held session's shell and children go with it.
	out, _ = endWhileHeld(t, c, id, grantFile, "users", "disable", "alice", "--end-sessions")
	if !strings.Contains(out, "disabled alice") || !strings.Contains(out, "ended 1 session(s): "+id) {
		t.Errorf("users disable --end-sessions said %q", out)
	}
	wantCodes(t, "the grant after disable --end-sessions", d.checked("second", id), all(msg.CodeBadGrant))
	disabled()
	enable()
	wantCodes(t, "the second grant after enable", d.checked("second", id), all(msg.CodeBadGrant))
	login("third")
	wantCodes(t, "a new grant after enable: the ended session", d.checked("third", id),
		map[string]string{"create": "ok", "pty-list": "not-listed", "pty-get": msg.CodeNotFound})
	if id2 := d.ask("open third"); id2 == id || len(id2) != len(id) {
		t.Errorf("a session after enable: %q", id2)
	}
	if j := c.must("journalctl", "--no-pager", "-o", "cat", "-u", "sluice-auth@*"); !strings.Contains(j, "login refused: user disabled") {
		t.Errorf("auth's journal lacks the refused sign-in")
	}
}
