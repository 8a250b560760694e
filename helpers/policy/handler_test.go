package policy_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/policy"
	"sluice/helpers/ptystore"
	"sluice/helpers/shell"
	"sluice/internal/grant"
	"sluice/internal/installtest"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/rpctest"
	"sluice/tests/ptytest"
)

// listen serves h for protocol name on a real socket and returns a client.
func listen(t *testing.T, name string, h rpc.HandlerFunc) *rpc.Client {
	t.Helper()
	r := rpctest.Route(name, rpctest.Me(), 0, h)
	return rpctest.Client(rpctest.Serve(t, &rpc.Server{Name: name, Routes: []rpc.Route{r}}, "", 0), r)
}

const handlerPolicy = `allow alice as root on .host
allow alice as nobody on .host command /bin/sh -i
allow alice as root on web1
`

type fixture struct {
	h     *policy.Handler // set fields before the first call only
	key   grant.Key
	store *ptystore.Store // the real ptystore handler's, behind "policy to ptystore"
	web   *rpc.Client     // as the frontend, to policy
	logs  *bytes.Buffer
}

// setup runs the policy handler in front of a real shell handler (embedded
// backend), each on its own socket, as the helpers would.
func setup(t *testing.T, shellClient policy.ShellClient) *fixture {
	t.Helper()
	return setupPolicy(t, handlerPolicy, shellClient)
}

// setupPolicy is setup with a policy file of the test's own.
func setupPolicy(t *testing.T, text string, shellClient policy.ShellClient) *fixture {
	t.Helper()
	p, err := policy.Parse(strings.NewReader(text), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	if shellClient == nil {
		shellClient = realShell(t)
	}
	f := &fixture{key: grant.NewKey(), logs: &bytes.Buffer{}}
	log := slog.New(slog.NewTextHandler(f.logs, nil))
	return setupStore(t, f, p, shellClient, ptystore.Config{Log: log})
}

// realShell serves the real shell helper's "policy to shell" with the
// embedded backend, which as root logs in through sluice-login.
func realShell(t *testing.T) policy.ShellClient {
	t.Helper()
	login := filepath.Join(installtest.Build(t, "sluice-login"), "sluice-login")
	sh := &shell.Handler{Backend: &shell.Embedded{Login: login}}
	return listen(t, msg.ProtoPolicyToShell, optable.HandlerOf(sh.Tables(), msg.ProtoPolicyToShell))
}

// setupStore serves a real ptystore handler (no fd store, no policy
// checks) on "policy to ptystore" for the policy handler to put into.
func setupStore(t *testing.T, f *fixture, p *policy.Policy, shellClient policy.ShellClient, cfg ptystore.Config) *fixture {
	t.Helper()
	st, err := ptystore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	f.store = st
	pt := ptystore.NewHandler(st, f.key)
	r := rpctest.Route(msg.ProtoPolicyToPtyStore, rpctest.Me(), 1, optable.HandlerOf(pt.Tables(), msg.ProtoPolicyToPtyStore))
	ptClient := rpctest.Client(rpctest.Serve(t, &rpc.Server{Name: msg.PtyStore, Routes: []rpc.Route{r}}, "", 0), r)
	h := &policy.Handler{Key: f.key, Policy: p, Shell: shellClient, PtyStore: ptClient,
		Log: cfg.Log}
	f.web = listen(t, msg.ProtoWebToPolicy, optable.HandlerOf(h.Tables(), msg.ProtoWebToPolicy))
	f.h = h
	return f
}

func (f *fixture) grant(t *testing.T, user string) msg.Grant {
	t.Helper()
	g, err := grant.Sign(f.key, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// badGrants are alice's grant under another key, expired, with the user
// changed after signing, and one for a name no sluice user can have.
func (f *fixture) badGrants(t *testing.T) (forged, expired, tampered, badName msg.Grant) {
	t.Helper()
	forged, _ = grant.Sign(grant.NewKey(), "alice", time.Now(), time.Hour)
	expired, _ = grant.Sign(f.key, "alice", time.Now().Add(-2*time.Hour), time.Hour)
	tampered = f.grant(t, "alice")
	tampered.User = "bob"
	badName, _ = grant.Sign(f.key, "Alice", time.Now(), time.Hour)
	return forged, expired, tampered, badName
}

func (f *fixture) create(t *testing.T, a msg.CreateShellSession) (msg.CreateShellSessionReply, []*os.File, error) {
	t.Helper()
	args, err := msgpack.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var rep msg.CreateShellSessionReply
	fds, err := f.web.Call(context.Background(), msg.Request{Op: msg.OpCreateShellSession, Args: args}, nil, &rep)
	return rep, fds, err
}

func TestHandlerAllow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CI runs as root)")
	}
	f := setup(t, nil)
	before := time.Now().UnixMilli()
	rep, fds, err := f.create(t, msg.CreateShellSession{Machine: ".host", User: "nobody",
		Args: []string{"/bin/sh", "-i"}, Env: []string{"TERM=vt100", "LD_PRELOAD=/tmp/x.so", "BASH_ENV=/tmp/x"},
		Grant: f.grant(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 1 {
		t.Fatalf("%d fds", len(fds))
	}
	s := rep.Session
	if len(s.ID) != 32 || s.Owner != "alice" || s.UnixUser != "nobody" || s.Machine != ".host" ||
		s.Sharing != msg.SharePrivate || s.PID <= 0 || s.Created < before || s.Created > time.Now().UnixMilli() {
		t.Errorf("session %+v", s)
	}
	if rep.Rule != "allow alice as nobody on .host command /bin/sh -i (test.policy:2)" {
		t.Errorf("rule %q", rep.Rule)
	}
	// ptystore holds it, under the info policy vouched for (the put's
	// ticket checked there), before the caller had the fd.
	if got := f.store.List(nil); len(got) != 1 || got[0] != s {
		t.Errorf("ptystore holds %+v, want %+v", got, s)
	}
	term, err := ptytest.New(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	term.Type(`echo "<$(id -u)|$TERM|${LD_PRELOAD-unset}|${BASH_ENV-unset}>"` + "\n")
	if _, err := term.Expect("<65534|vt100|unset|unset>"); err != nil {
		t.Fatal(err)
	}
	logs := f.logs.String()
	for _, want := range []string{"policy: decision", "user=alice", "unix_user=nobody", "machine=.host", "result=allow",
		`rule="allow alice as nobody on .host command /bin/sh -i (test.policy:2)"`, "dropped=2", "session=" + s.ID} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestHandlerErrors(t *testing.T) {
	f := setup(t, nil)
	forged, expired, tampered, badName := f.badGrants(t)

	for _, tc := range []struct {
		name string
		a    msg.CreateShellSession
		code string
		text string
		log  string
	}{
		{"denied", msg.CreateShellSession{Machine: ".host", User: "alice", Grant: f.grant(t, "alice")},
			msg.CodeDenied, "alice may not open a shell as alice on .host", "result=deny"},
		{"denied command", msg.CreateShellSession{Machine: ".host", User: "root", Args: []string{"/bin/sh"}, Grant: f.grant(t, "alice")},
			msg.CodeDenied, `alice may not run "/bin/sh" as root on .host`, "result=deny"},
		{"other user's rule", msg.CreateShellSession{Machine: ".host", User: "root", Grant: f.grant(t, "bob")},
			msg.CodeDenied, "bob may not open a shell as root on .host", "user=bob"},
		{"forged grant", msg.CreateShellSession{Machine: ".host", User: "root", Grant: forged},
			msg.CodeBadGrant, "grant not valid", "policy: bad grant"},
		{"tampered grant", msg.CreateShellSession{Machine: ".host", User: "root", Grant: tampered},
			msg.CodeBadGrant, "grant not valid", "policy: bad grant"},
		{"expired grant", msg.CreateShellSession{Machine: ".host", User: "root", Grant: expired},
			msg.CodeBadGrant, "expired", "policy: bad grant"},
		{"no grant", msg.CreateShellSession{Machine: ".host", User: "root"},
			msg.CodeBadGrant, "grant not valid", "policy: bad grant"},
		{"invalid grant user", msg.CreateShellSession{Machine: ".host", User: "root", Grant: badName},
			msg.CodeBadGrant, "invalid user name", "invalid user name"},
		{"bad unix user", msg.CreateShellSession{Machine: ".host", User: "-root", Grant: f.grant(t, "alice")},
			rpc.CodeBadRequest, "invalid unix user name", ""},
		{"bad machine", msg.CreateShellSession{Machine: "a/b", User: "root", Grant: f.grant(t, "alice")},
			rpc.CodeBadRequest, "invalid machine name", ""},
		// Allowed, but the embedded shell helper has no machined.
		{"shell failed", msg.CreateShellSession{Machine: "web1", User: "root", Grant: f.grant(t, "alice")},
			msg.CodeFailed, "no machined", "policy: shell helper failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.logs.Reset()
			_, fds, err := f.create(t, tc.a)
			if len(fds) != 0 {
				t.Errorf("%d fds on an error", len(fds))
			}
			if rpc.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v, want %s mentioning %q", err, tc.code, tc.text)
			}
			if !strings.Contains(f.logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, f.logs)
			}
		})
	}

	t.Run("unknown op", func(t *testing.T) {
		_, err := f.web.Call(context.Background(), msg.Request{Op: msg.OpOpenShell}, nil, nil)
		if rpc.CodeOf(err) != rpc.CodeBadRequest {
			t.Fatalf("err %v", err)
		}
	})
}

func TestHandlerShellUnreachable(t *testing.T) {
	client, server := rpctest.Hellos(msg.ProtoPolicyToShell)
	f := setup(t, &rpc.Client{Path: filepath.Join(t.TempDir(), "absent.sock"), Hello: client, Expect: server})
	_, _, err := f.create(t, msg.CreateShellSession{Machine: ".host", User: "root", Grant: f.grant(t, "alice")})
	if rpc.CodeOf(err) != msg.CodeFailed || !strings.Contains(err.Error(), "could not be opened") {
		t.Fatalf("err %v", err)
	}
	// The socket path stays in the log, not in what the user sees.
	if strings.Contains(err.Error(), "absent.sock") || !strings.Contains(f.logs.String(), "absent.sock") {
		t.Errorf("err %v; log %s", err, f.logs)
	}
}

// TestCreateStoreRefuses: when ptystore does not take the session (here
// alice is at her limit of one), policy ends the shell it opened and
// answers the refusal, handing out no fd.
func TestCreateStoreRefuses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CI runs as root)")
	}
	p, err := policy.Parse(strings.NewReader(handlerPolicy), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	shellClient := realShell(t)
	f := &fixture{key: grant.NewKey(), logs: &bytes.Buffer{}}
	setupStore(t, f, p, shellClient, ptystore.Config{MaxPerUser: 1, Log: slog.New(slog.NewTextHandler(f.logs, nil))})

	a := msg.CreateShellSession{Machine: ".host", User: "nobody", Args: []string{"/bin/sh", "-i"}, Grant: f.grant(t, "alice")}
	first, fds, err := f.create(t, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		fd.Close() // ptystore holds the session
	}
	_, fds, err = f.create(t, a)
	if code := rpc.CodeOf(err); code != msg.CodeDenied || len(fds) != 0 {
		t.Fatalf("second create: %v (%d fds), want denied and none", err, len(fds))
	}
	// The refused session's shell is gone: its pid is in the log line.
	var pid int
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(line, "ptystore did not take the session") {
			if i := strings.Index(line, " pid="); i >= 0 {
				fmt.Sscanf(line[i+len(" pid="):], "%d", &pid)
			}
		}
	}
	if pid <= 0 {
		t.Fatalf("no refused session logged:\n%s", f.logs.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the refused session's shell %d still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := f.store.List(nil); len(got) != 1 || got[0].ID != first.Session.ID {
		t.Fatalf("ptystore holds %+v, want only %s", got, first.Session.ID)
	}
}

// TestCreateStoreUnreachable: with ptystore down policy fails closed: no
// fd, the shell it opened hung up, and an answer that says so without the
// socket's path (that is in the log).
func TestCreateStoreUnreachable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CI runs as root)")
	}
	p, err := policy.Parse(strings.NewReader(handlerPolicy), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	shellClient := realShell(t)
	f := &fixture{key: grant.NewKey(), logs: &bytes.Buffer{}}
	setupStore(t, f, p, shellClient, ptystore.Config{Log: slog.New(slog.NewTextHandler(f.logs, nil))})
	client, server := rpctest.Hellos(msg.ProtoPolicyToPtyStore)
	f.h.PtyStore = &rpc.Client{Path: filepath.Join(t.TempDir(), "absent.sock"), Hello: client, Expect: server}

	_, fds, err := f.create(t, msg.CreateShellSession{Machine: ".host", User: "nobody", Args: []string{"/bin/sh", "-i"}, Grant: f.grant(t, "alice")})
	if rpc.CodeOf(err) != msg.CodeFailed || !strings.Contains(err.Error(), "could not be stored") || len(fds) != 0 {
		t.Fatalf("create: %v, %d fds; want failed: could not be stored, and none", err, len(fds))
	}
	if strings.Contains(err.Error(), "absent.sock") || !strings.Contains(f.logs.String(), "absent.sock") {
		t.Errorf("err %v; log %s", err, f.logs)
	}
	var pid int
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if i := strings.Index(line, " pid="); i >= 0 && strings.Contains(line, "ptystore did not take the session") {
			fmt.Sscanf(line[i+len(" pid="):], "%d", &pid)
		}
	}
	if pid <= 0 {
		t.Fatalf("no session logged:\n%s", f.logs)
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("the unstored session's shell %d still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCreatePutsLimits: the put carries the limits of the rule that
// allowed the session, so ptystore stores them without asking policy
// back (see msg.PtyPut), and the reply gives them to the frontend.
func TestCreatePutsLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CI runs as root)")
	}
	// nobody running sh, not root's login shell: a root login shell ended
	// while its profile runs can leave the profile's locks behind (pyenv's
	// rehash lock stalled every later root login on the CI image 60 s).
	f := setupPolicy(t, "limit max 12h\nallow alice as nobody on .host idle 5m detached 10m command /bin/sh -i\n", nil)
	rep, fds, err := f.create(t, msg.CreateShellSession{Machine: ".host", User: "nobody", Args: []string{"/bin/sh", "-i"}, Grant: f.grant(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		fd.Close()
	}
	want := msg.Limits{Idle: (5 * time.Minute).Milliseconds(), Detached: (10 * time.Minute).Milliseconds(), Max: (12 * time.Hour).Milliseconds()}
	stored, known := f.store.Limits(rep.Session.ID)
	if rep.Limits != want || stored != want || !known {
		t.Errorf("limits: reply %+v, stored %+v (known %v), want %+v", rep.Limits, stored, known, want)
	}
	if err := f.store.Drop(context.Background(), rep.Session.ID, nil); err != nil {
		t.Error(err)
	}
}

// lateShell is a shell helper reached only after the create's caller
// has given up (its server's deadline is 300 ms): the shell is opened
// and put on whatever context policy hands on.
type lateShell struct{ policy.ShellClient }

func (l lateShell) Call(ctx context.Context, req any, fds []*os.File, resp any) ([]*os.File, error) {
	time.Sleep(400 * time.Millisecond)
	return l.ShellClient.Call(ctx, req, fds, resp)
}

// TestCreateLateStillPuts: a shell opened after the caller's deadline
// passed is still put into ptystore (where sessions end, the detached
// limit and revocation reach it), not only hung up, which a process
// ignoring SIGHUP outlives: policy finishes a create it has decided on
// on its own deadline.
func TestCreateLateStillPuts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CI runs as root)")
	}
	f := setupPolicy(t, "allow alice as nobody on .host command /bin/sh -i\n", lateShell{realShell(t)})
	r := rpctest.Route(msg.ProtoWebToPolicy, rpctest.Me(), 0, optable.HandlerOf(f.h.Tables(), msg.ProtoWebToPolicy))
	web := rpctest.Client(rpctest.Serve(t, &rpc.Server{Name: msg.Policy, Routes: []rpc.Route{r}, Timeout: 300 * time.Millisecond}, "", 0), r)
	args, err := msgpack.Marshal(msg.CreateShellSession{Machine: ".host", User: "nobody", Args: []string{"/bin/sh", "-i"}, Grant: f.grant(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	fds, err := web.Call(context.Background(), msg.Request{Op: msg.OpCreateShellSession, Args: args}, nil, nil)
	for _, fd := range fds {
		fd.Close()
	}
	t.Logf("the create's own answer: %v", err)
	var stored []msg.SessionInfo
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if stored = f.store.List(nil); len(stored) > 0 {
			break
		}
	}
	if len(stored) != 1 || stored[0].Owner != "alice" {
		t.Fatalf("sessions in ptystore after a create whose deadline passed as its shell opened: %+v; want alice's\n%s", stored, f.logs)
	}
	if err := f.store.Drop(context.Background(), stored[0].ID, nil); err != nil {
		t.Error(err)
	}
}
