package e2e

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

// Users are enrolled once; the tests share their authenticators.
var (
	usersOnce sync.Once
	alice     *softauthn.Authenticator
	bob       *softauthn.Authenticator
)

func users(t *testing.T) {
	t.Helper()
	usersOnce.Do(func() {
		alice = softauthn.New("localhost", env.origin)
		bob = softauthn.New("localhost", env.origin)
		for _, u := range []struct {
			name string
			a    *softauthn.Authenticator
		}{{"alice", alice}, {"bob", bob}} {
			c := connect(t)
			c.register(u.a, enroll(t, u.name))
			c.ws.Close()
		}
	})
	if alice == nil || len(alice.Credentials()) == 0 || len(bob.Credentials()) == 0 {
		t.Fatal("enrollment failed in an earlier test")
	}
}

func TestShell(t *testing.T) {
	users(t)
	c := connect(t)
	c.signIn(alice)
	if c.user != "alice" {
		t.Fatalf("signed in as %q", c.user)
	}
	m := c.create(120, 40)
	if m["mode"] != "owner" {
		t.Fatalf("creator's mode %v", m["mode"])
	}
	c.typeText("echo $((6*7))\r")
	c.until("42\r\n")
	c.typeText("stty size\r")
	c.until("40 120")
	c.send(map[string]any{"t": "resize", "cols": 91, "rows": 33})
	c.typeText("stty size\r")
	c.until("33 91")
	// UTF-8 both ways.
	c.typeText("echo 'grüße ✓'\r")
	c.until("\rgrüße ✓\r\n")

	// The session is listed with its viewer.
	c.send(map[string]any{"t": "list"})
	list := c.expect("sessions")["sessions"].([]any)
	found := false
	for _, s := range list {
		s := s.(map[string]any)
		if s["id"] == sessionID(m) {
			found = true
			if v := s["viewers"].([]any); len(v) != 1 {
				t.Fatalf("viewers %v, want alice only", v)
			}
		}
	}
	if !found {
		t.Fatalf("session %s not in list %v", sessionID(m), list)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	users(t)
	forged := alice.Clone()
	forged.WrongKey = true
	c := connect(t)
	if m := c.login(forged); m["t"] != "error" || m["code"] != "bad-grant" && m["code"] != "denied" && m["code"] != "forbidden" {
		t.Fatalf("sign-in with a key never registered: %v", m)
	}
	// Still not signed in: nothing that needs a grant works.
	c.send(map[string]any{"t": "list"})
	if e := c.expectError(); e["code"] != "sign-in" {
		t.Fatalf("list after a refused sign-in: %v", e)
	}
	c.send(map[string]any{"t": "create", "machine": ".host", "user": "root"})
	if e := c.expectError(); e["code"] != "sign-in" {
		t.Fatalf("create after a refused sign-in: %v", e)
	}
}

func TestOriginChecked(t *testing.T) {
	for _, origin := range []string{"", "http://evil.example", "http://localhost:1", "null", strings.Replace(env.origin, "http:", "https:", 1)} {
		ws, resp, err := dial(t, origin)
		if err == nil {
			ws.Close()
			t.Fatalf("upgrade with Origin %q accepted", origin)
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("upgrade with Origin %q: %v, %v", origin, resp, err)
		}
	}
}

func TestPolicyDenied(t *testing.T) {
	users(t)
	c := connect(t)
	c.signIn(bob)
	c.send(map[string]any{"t": "create", "machine": ".host", "user": "daemon"})
	e := c.expectError()
	if e["code"] != "denied" {
		t.Fatalf("create as daemon: %v", e)
	}
}

// TestTargets: the new-session form's list comes from the policy file.
// Alice gets root on .host (her rule, before the closing deny), and the
// shell it names opens; carol, whom only the deny names, gets an empty
// list, and create agrees; nobody gets a list before signing in.
func TestTargets(t *testing.T) {
	users(t)
	b, err := env.Run.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var re *suiterun.RemoteError
	if _, _, err := b.Targets(); !errors.As(err, &re) || re.Op != "targets" || re.Code != "sign-in" {
		t.Fatalf("targets before sign-in: %v", err)
	}
	if err := b.SignIn(alice); err != nil {
		t.Fatal(err)
	}
	ts, truncated, err := b.Targets()
	if err != nil {
		t.Fatal(err)
	}
	if want := []suiterun.Target{{User: "root", Machine: ".host"}}; !reflect.DeepEqual(ts, want) || truncated {
		t.Fatalf("alice's targets %+v (truncated %v), want %+v", ts, truncated, want)
	}
	if err := b.Send(map[string]any{"t": "create", "machine": ts[0].Machine, "user": ts[0].User, "cols": 80, "rows": 24}); err != nil {
		t.Fatal(err)
	}
	m, err := b.Expect("attached")
	if err != nil {
		t.Fatalf("creating the listed target: %v", err)
	}
	if err := b.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := b.Run("echo \"<$(id -un)>\"", "<root>"); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(map[string]any{"t": "end", "id": sessionID(m)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Expect("ended"); err != nil {
		t.Fatal(err)
	}

	carol := softauthn.New("localhost", env.origin)
	reg := connect(t)
	reg.register(carol, enroll(t, "carol"))
	reg.ws.Close()
	cb, err := env.Run.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if err := cb.SignIn(carol); err != nil {
		t.Fatal(err)
	}
	if ts, truncated, err := cb.Targets(); err != nil || len(ts) != 0 || truncated {
		t.Fatalf("carol's targets %+v (truncated %v, err %v), want none", ts, truncated, err)
	}
	if err := cb.Send(map[string]any{"t": "create", "machine": ".host", "user": "root"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Expect("attached"); !errors.As(err, &re) || re.Code != "denied" {
		t.Fatalf("carol's create with an empty list: %v", err)
	}
}

func TestShareReadOnly(t *testing.T) {
	users(t)
	owner := connect(t)
	owner.signIn(alice)
	id := sessionID(owner.create(80, 24))
	owner.typeText("echo ready-$((1+1))\r")
	owner.until("ready-2")

	// Bob cannot get at it without a share token.
	watcher := connect(t)
	watcher.signIn(bob)
	watcher.send(map[string]any{"t": "attach", "id": id})
	if e := watcher.expectError(); e["code"] != "not-found" {
		t.Fatalf("attach someone else's session without a token: %v", e)
	}

	owner.send(map[string]any{"t": "share", "id": id, "mode": "read-only", "history": true})
	tok := owner.expect("shared")["token"].(string)
	m := watcher.attach(id, tok)
	if m["mode"] != "read-only" {
		t.Fatalf("shared read-only, attached as %v", m["mode"])
	}
	// The scrollback came along: the owner included the history.
	watcher.until("ready-2")
	// The owner sees who is watching.
	for {
		v := owner.expect("viewers")["viewers"].([]any)
		if len(v) == 2 && v[1].(map[string]any)["user"] == "bob" && v[1].(map[string]any)["mode"] == "read-only" {
			break
		}
	}

	watcher.typeText("echo bob-was-here\r")
	if e := watcher.expectError(); e["code"] != "forbidden" {
		t.Fatalf("read-only input: %v", e)
	}
	watcher.send(map[string]any{"t": "resize", "cols": 20, "rows": 5})
	owner.typeText("echo owner-$((2+3)); stty size\r")
	owner.until("owner-5")
	owner.until("24 80")
	watcher.until("owner-5")
	owner.drain()
	if strings.Contains(owner.all.String(), "bob-was-here") {
		t.Fatal("a read-only viewer's keystrokes reached the shell")
	}

	// Read-write sharing lets a second user type.
	owner.send(map[string]any{"t": "share", "id": id, "mode": "read-write"})
	tok = owner.expect("shared")["token"].(string)
	typist := connect(t)
	typist.signIn(bob)
	if m := typist.attach(id, tok); m["mode"] != "read-write" {
		t.Fatalf("shared read-write, attached as %v", m["mode"])
	}
	typist.typeText("echo bob-$((3*3))\r")
	owner.until("bob-9")
}

func TestReattachAndFrontendRestart(t *testing.T) {
	users(t)
	c := connect(t)
	c.signIn(alice)
	id := sessionID(c.create(80, 24))
	c.typeText("MARK=kept; echo before-$((40+2))\r")
	c.until("before-42")
	c.ws.Close()

	// A new tab, signed in again, finds the session with its scrollback.
	c = connect(t)
	c.signIn(alice)
	c.attach(id, "")
	c.until("before-42")
	c.ws.Close()

	// kill -9 the frontend; the shell lives on in ptystore, and the
	// runner starts a new frontend on the same socket.
	if err := killFrontend(); err != nil {
		t.Fatal(err)
	}
	if err := startFrontend(); err != nil {
		t.Fatal(err)
	}
	c = connect(t)
	c.signIn(alice)
	c.send(map[string]any{"t": "list"})
	found := false
	for _, s := range c.expect("sessions")["sessions"].([]any) {
		found = found || s.(map[string]any)["id"] == id
	}
	if !found {
		t.Fatalf("session %s gone after the frontend restarted", id)
	}
	c.attach(id, "")
	c.typeText("echo after-$MARK\r")
	c.until("after-kept")

	// Ending it hangs the shell up.
	c.send(map[string]any{"t": "end", "id": id})
	// Both come, in either order: the hang-up may reach the stream first.
	seen := map[any]bool{}
	for !seen["ended"] || !seen["exit"] {
		m := c.next()
		if m["t"] == "error" {
			t.Fatalf("end: %v", m)
		}
		seen[m["t"]] = true
	}
}
