// Package faults kills sluice's components with SIGKILL, one at a time and
// all at once, while shell sessions are live and calls are in flight, and
// shows that afterwards every session is still there and answers, every
// registered passkey still signs in, and the caller that was cut off saw
// a definite error rather than a wrong answer or a hang.
//
// The suite runs under the real `sluice run` (package suiterun) with its
// embedded default config, so restarts, the fd store and Accept=yes
// spawning are the runner's own. Sessions are made as a user makes them:
// passkey registration and sign-in with a software authenticator over the
// frontend's WebSocket, then "create".
//
// What a cut-off caller sees (asserted below):
//   - frontend killed: the page's WebSocket ends with close code 1006
//     (abnormal closure); a new connection is served by the restarted
//     frontend on the same socket, which the runner held meanwhile.
//   - a helper killed after it accepted a call and before it answered: the
//     rpc client gets rpc.ErrHandshake, "server closed the connection
//     without answering" (a pipelining server sends its hello lines with
//     the answer, so the connection ends before any byte came back);
//     rpc.ErrTruncated if it died part way through writing.
//   - a call still queued in the listen backlog when a long-running helper
//     died is not lost: the runner holds the socket and the restarted
//     helper answers it.
//   - through the frontend: policy killed mid-call gives the page
//     {"code":"internal","message":"the policy helper stopped before
//     answering; try again"}; the shell helper killed mid-call gives {"code":"failed",
//     "message":"the shell could not be opened; see the policy helper's
//     log"}. The same connection can try again at once.
//
// Disk full in the auth state directory is tested beside the store, in
// helpers/auth (TestDiskFull*): registration fails with a clear error and
// existing credentials still sign in.
package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"sluice/helpers/auth/store"
	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

type user struct {
	name string
	a    *softauthn.Authenticator
}

// env is the running suite and what the tests know must survive.
var env struct {
	s     *suiterun.Suite
	users []*user
	// sessions maps a session ID to its owner and the value of $MARK
	// typed into it at creation: the same shell answers, not a new one.
	mu       sync.Mutex
	sessions map[string]sessRec
	check    atomic.Int64 // nonce for each check, so scrollback cannot answer
}

type sessRec struct{ owner, mark string }

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		return 1, errors.New("needs root: the runner switches users and the shells run as root (CI runs as root)")
	}
	if err := suiterun.RaiseNoFile(); err != nil {
		return 1, err
	}
	dir, err := os.MkdirTemp("", "sluice-faults-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin, err := suiterun.Binaries(dir)
	if err != nil {
		return 1, err
	}
	s, err := suiterun.Start(suiterun.Options{Dir: filepath.Join(dir, "suite"), Bin: bin, FreshRootHome: true, Tweak: func(c suiterun.RawConfig) {
		// One shell instance at a time, so a test can hold the shell
		// socket busy and have policy wait on it; a long timeout so the
		// holding connection outlasts the test's steps.
		c.Unit(msg.Shell)["max_connections"] = 1
		c.AppendExec(msg.Shell, "--timeout", "60s")
	}})
	if err != nil {
		return 1, err
	}
	env.s = s
	env.sessions = map[string]sessRec{}
	if err := setup(); err != nil {
		s.Stop()
		return 1, fmt.Errorf("setup: %v\n--- runner log ---\n%s", err, s.Log)
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- runner log ---\n%s", s.Log)
	}
	if err := s.Stop(); err != nil {
		return 1, err
	}
	return code, nil
}

// setup registers alice and bob and opens three sessions: two of alice's,
// one of bob's.
func setup() error {
	ctx := context.Background()
	for _, name := range []string{"alice", "bob"} {
		if _, err := addUser(ctx, name); err != nil {
			return err
		}
	}
	for i, owner := range []string{"alice", "alice", "bob"} {
		b, err := signIn(userNamed(owner))
		if err != nil {
			return err
		}
		_, err = newSession(b, fmt.Sprintf("m%d", i))
		b.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// addUser enrolls name and registers a passkey for it over the WebSocket.
func addUser(ctx context.Context, name string) (*user, error) {
	tok, err := env.s.Enroll(ctx, name)
	if err != nil {
		return nil, err
	}
	b, err := env.s.Dial()
	if err != nil {
		return nil, err
	}
	defer b.Close()
	u := &user{name: name, a: softauthn.New("localhost", env.s.Origin)}
	if err := b.Register(u.a, tok); err != nil {
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	env.mu.Lock()
	env.users = append(env.users, u)
	env.mu.Unlock()
	return u, nil
}

func userNamed(name string) *user {
	env.mu.Lock()
	defer env.mu.Unlock()
	for _, u := range env.users {
		if u.name == name {
			return u
		}
	}
	panic("no user " + name)
}

func signIn(u *user) (*suiterun.Browser, error) {
	b, err := env.s.Dial()
	if err != nil {
		return nil, err
	}
	if err := b.SignIn(u.a); err != nil {
		b.Close()
		return nil, fmt.Errorf("sign in %s: %w", u.name, err)
	}
	return b, nil
}

// newSession creates a session on b, types MARK=mark into it, and records
// it as one that must survive.
func newSession(b *suiterun.Browser, mark string) (string, error) {
	id, err := b.Create()
	if err != nil {
		return "", err
	}
	if err := b.Ready(); err != nil {
		return "", fmt.Errorf("session %s: %w", id, err)
	}
	if err := b.Run("export MARK="+mark+"; echo \"<${MARK}|$((6*7))>\"", "<"+mark+"|42>"); err != nil {
		return "", fmt.Errorf("session %s: %w", id, err)
	}
	env.mu.Lock()
	env.sessions[id] = sessRec{owner: b.User, mark: mark}
	env.mu.Unlock()
	return id, nil
}

// answers types into the attached session and checks that the shell
// holding MARK answers: the same shell, alive, reading and writing.
func answers(b *suiterun.Browser, mark string) error {
	n := env.check.Add(1)
	return b.Run(fmt.Sprintf(`echo "<$((6*7))|$MARK|%d>"`, n), fmt.Sprintf("<42|%s|%d>", mark, n))
}

// checkAll is the invariant after every fault: ptystore holds exactly the
// sessions made so far; every user signs in with their passkey, sees
// their own sessions, and each of them answers as the same shell.
func checkAll(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	env.mu.Lock()
	want := map[string]sessRec{}
	for id, r := range env.sessions {
		want[id] = r
	}
	users := slices.Clone(env.users)
	env.mu.Unlock()

	held, err := env.s.Sessions(ctx)
	if err != nil {
		t.Fatalf("admin pty-list: %v", err)
	}
	var got []string
	for _, si := range held {
		got = append(got, si.ID)
		if r, ok := want[si.ID]; ok && si.Owner != r.owner {
			t.Errorf("session %s: owner %q, want %q", si.ID, si.Owner, r.owner)
		}
	}
	if !sameSet(got, keys(want)) {
		t.Fatalf("ptystore holds %v, want %v", got, keys(want))
	}
	for _, u := range users {
		b, err := signIn(u)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := b.List()
		if err != nil {
			b.Close()
			t.Fatalf("%s: list: %v", u.name, err)
		}
		var mine []string
		for id, r := range want {
			if r.owner == u.name {
				mine = append(mine, id)
			}
		}
		if !sameSet(ids, mine) {
			t.Errorf("%s lists %v, want %v", u.name, ids, mine)
		}
		for _, id := range mine {
			if _, err := b.Attach(id); err != nil {
				t.Errorf("%s: attach %s: %v", u.name, id, err)
				continue
			}
			if err := answers(b, want[id].mark); err != nil {
				t.Errorf("%s: session %s: %v", u.name, id, err)
			}
		}
		b.Close()
	}
}

func keys(m map[string]sessRec) []string {
	var k []string
	for id := range m {
		k = append(k, id)
	}
	return k
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}

// cutOff reports whether err is what an rpc caller sees when the helper
// serving its call died: closed without answering, or cut mid-answer.
func cutOff(err error) bool {
	return errors.Is(err, rpc.ErrTruncated) ||
		errors.Is(err, rpc.ErrHandshake) && strings.Contains(err.Error(), "closed the connection without answering")
}

// mustChild waits for a child of the runner running binary name, other
// than skip.
func mustChild(t *testing.T, name string, skip ...int) int {
	t.Helper()
	pid, err := env.s.WaitChild(name, skip...)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func mustKill(t *testing.T, pid int) {
	t.Helper()
	if err := env.s.Kill(pid); err != nil {
		t.Fatal(err)
	}
}

// attachedTo signs u in and attaches to one of u's sessions.
func attachedTo(t *testing.T, u *user) (*suiterun.Browser, string, sessRec) {
	t.Helper()
	b, err := signIn(u)
	if err != nil {
		t.Fatal(err)
	}
	env.mu.Lock()
	var id string
	for sid, r := range env.sessions {
		if r.owner == u.name && (id == "" || sid < id) {
			id = sid
		}
	}
	rec := env.sessions[id]
	env.mu.Unlock()
	if _, err := b.Attach(id); err != nil {
		b.Close()
		t.Fatal(err)
	}
	return b, id, rec
}

func TestSetupHolds(t *testing.T) { checkAll(t) }

// TestKillFrontend: the frontend dies while a shell is printing to an
// attached page and another page is asking for its list.
func TestKillFrontend(t *testing.T) {
	old := mustChild(t, "sluice-frontend")
	viewer, _, rec := attachedTo(t, userNamed("alice"))
	defer viewer.Close()
	// A shell that goes on printing while nobody reads it.
	if err := viewer.Run(`for i in $(seq 1 30); do echo "tick-$MARK-$i"; sleep 0.1; done`, "tick-"+rec.mark+"-1"); err != nil {
		t.Fatal(err)
	}
	lister, err := signIn(userNamed("bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer lister.Close()
	listing := make(chan error, 1)
	go func() {
		for i := 0; i < 100000; i++ {
			if _, err := lister.List(); err != nil {
				listing <- err
				return
			}
		}
		listing <- errors.New("the frontend answered 100000 lists and never went away")
	}()
	time.Sleep(50 * time.Millisecond) // let the lists run; no assertion on time
	mustKill(t, old)

	if err := <-listing; !errors.Is(err, suiterun.ErrClosed) {
		t.Errorf("in-flight list: %v, want the WebSocket closed", err)
	}
	for _, b := range []*suiterun.Browser{viewer, lister} {
		// The reader records the close once the channel drains.
		for range 1000 {
			if b.ReadErr() != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		// A browser reports either as close code 1006 to the page.
		if err := b.ReadErr(); !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("page saw %v, want close 1006 (abnormal closure) or a reset", err)
		}
	}
	mustChild(t, "sluice-frontend", old)

	// The shell went on without a reader; its later output reaches a new
	// page through the new frontend.
	b, err := signIn(userNamed("alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for id, r := range env.sessions {
		if r == rec {
			if _, err := b.Attach(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := b.Until("tick-" + rec.mark + "-30"); err != nil {
		t.Fatal(err)
	}
	checkAll(t)
}

// TestKillPtyStore: ptystore dies (1) with a call queued behind it and a
// page attached, (2) with calls being served.
func TestKillPtyStore(t *testing.T) {
	ctx := context.Background()
	old := mustChild(t, "sluice-ptystore")
	viewer, _, rec := attachedTo(t, userNamed("bob"))
	defer viewer.Close()

	// (1) Stopped, so the next call waits in the socket's backlog; the
	// attached page does not need ptystore at all.
	if err := unix.Kill(old, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := answers(viewer, rec.mark); err != nil {
		t.Errorf("attached page while ptystore is stopped: %v", err)
	}
	admin, err := env.s.Client(msg.Admin, msg.ProtoAdminToPtyStore)
	if err != nil {
		t.Fatal(err)
	}
	admin.Timeout = suiterun.Wait
	queued := make(chan error, 1)
	var list msg.PtyListReply
	go func() {
		_, err := suiterun.Call(ctx, admin, msg.OpPtyList, msg.PtyList{}, nil, &list)
		queued <- err
	}()
	mustKill(t, old)
	second := mustChild(t, "sluice-ptystore", old)
	if err := <-queued; err != nil {
		t.Errorf("call queued while ptystore died: %v, want the restarted ptystore's answer", err)
	} else if len(list.Sessions) != len(env.sessions) {
		t.Errorf("queued call answered with %d sessions, want %d", len(list.Sessions), len(env.sessions))
	}

	// (2) Killed while callers keep calling.
	stop := make(chan struct{})
	type result struct {
		ok, cut int
		after   atomic.Int64 // answers after the kill; read while running
		other   []error
	}
	results := make([]result, 4)
	var killed atomic.Bool
	var wg sync.WaitGroup
	for w := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, _ := env.s.Client(msg.Admin, msg.ProtoAdminToPtyStore)
			r := &results[w]
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := suiterun.Call(ctx, cl, msg.OpPtyList, msg.PtyList{}, nil, &msg.PtyListReply{})
				switch {
				case err == nil:
					r.ok++
					if killed.Load() {
						r.after.Add(1)
					}
				case cutOff(err):
					r.cut++
				default:
					r.other = append(r.other, err)
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	mustKill(t, second)
	killed.Store(true)
	third := mustChild(t, "sluice-ptystore", old, second)
	// Every caller gets answers from the new ptystore before it stops.
	for deadline := time.Now().Add(suiterun.Wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		done := true
		for i := range results {
			if results[i].after.Load() == 0 {
				done = false
			}
		}
		if done {
			break
		}
	}
	close(stop)
	wg.Wait()
	var cut int
	for i := range results {
		r := &results[i]
		cut += r.cut
		if len(r.other) > 0 {
			t.Errorf("caller %d: %d unclear errors, first: %v", i, len(r.other), r.other[0])
		}
		if r.after.Load() == 0 {
			t.Errorf("caller %d: no answer after the restart", i)
		}
	}
	t.Logf("ptystore killed under load: %d calls cut off with a clear error, restarted as pid %d", cut, third)
	checkAll(t)
}

// TestKillAuthMidCall: an auth instance is killed while it is serving a
// login-begin for a named user (held at its database lock, as it would be
// behind a slow registration). A usernameless login-begin would not do:
// it needs no database and so never waits on the lock.
func TestKillAuthMidCall(t *testing.T) {
	unlock := lockAuthDB(t)
	defer unlock()
	web, err := env.s.Client(msg.Frontend, msg.ProtoWebToAuth)
	if err != nil {
		t.Fatal(err)
	}
	web.Timeout = suiterun.Wait
	// The instance waits for the lock for its --lock-timeout (3 s) and then
	// answers busy; on a loaded machine finding and killing it can take
	// longer, so a busy answer means "too late", and the attempt is made
	// again, a few times at most.
	for attempt := 1; ; attempt++ {
		done := make(chan error, 1)
		go func() {
			_, err := suiterun.Call(context.Background(), web, msg.OpLoginBegin, msg.LoginBegin{User: "alice"}, nil, &msg.LoginBeginReply{})
			done <- err
		}()
		pid := mustChild(t, "sluice-auth")
		mustKill(t, pid)
		err = <-done
		if rpc.CodeOf(err) == "busy" && attempt < 4 {
			t.Logf("attempt %d: the instance answered busy before it was killed; again", attempt)
			continue
		}
		if !errors.Is(err, rpc.ErrHandshake) || !strings.Contains(err.Error(), "server closed the connection without answering") {
			t.Errorf("caller saw %v, want rpc.ErrHandshake: closed without answering", err)
		}
		break
	}
	unlock()
	checkAll(t)
}

// lockAuthDB takes the auth database's lock as an instance holds it, so
// the next auth instance waits at its open. The returned func releases it
// (once).
func lockAuthDB(t *testing.T) func() {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(env.s.StateDir, msg.Auth, store.FileName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }
}

// TestAuthKillStorm: every auth instance that shows up is killed, for a
// while, as enrollments (writes) and logins run. The credential database
// must come out intact: every passkey signs in, a new user registers.
func TestAuthKillStorm(t *testing.T) {
	ctx := context.Background()
	admin, err := env.s.Client(msg.Admin, msg.ProtoAdminToAuth)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var ok, cut, kills atomic.Int64
	var otherMu sync.Mutex
	var other []error
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := suiterun.Call(ctx, admin, msg.OpEnroll, msg.Enroll{User: fmt.Sprintf("storm%d", w)}, nil, &msg.EnrollReply{})
				switch {
				case err == nil:
					ok.Add(1)
				case cutOff(err):
					cut.Add(1)
				default:
					otherMu.Lock()
					other = append(other, err)
					otherMu.Unlock()
				}
			}
		}()
	}
	// Every other instance is killed after a delay of up to 20 ms, so the
	// kills land anywhere in its life: starting, waiting for the lock,
	// inside a write transaction, answering.
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[int]bool{}
		var n int
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range env.s.Children() {
				if p.Name != "sluice-auth" || seen[p.PID] {
					continue
				}
				seen[p.PID] = true
				if n++; n%2 == 0 {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(time.Duration(n*7919%20000) * time.Microsecond)
					if unix.Kill(p.PID, unix.SIGKILL) == nil {
						kills.Add(1)
					}
				}()
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	// Bounded by count, not by how fast this machine is: stop once enough
	// instances died and enough calls got through between the kills.
	for deadline := time.Now().Add(suiterun.Wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if kills.Load() >= 40 && cut.Load() >= 10 && ok.Load() >= 20 {
			break
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("auth kill storm: %d instances killed, %d enrollments cut off, %d completed", kills.Load(), cut.Load(), ok.Load())
	if len(other) > 0 {
		t.Errorf("%d unclear errors, first: %v", len(other), other[0])
	}
	if kills.Load() == 0 || cut.Load() == 0 || ok.Load() == 0 {
		t.Fatalf("the storm killed %d instances, cut %d calls and completed %d; it tested nothing", kills.Load(), cut.Load(), ok.Load())
	}
	checkDB(t)
	if _, err := addUser(ctx, "carol"); err != nil {
		t.Fatalf("registration after the storm: %v", err)
	}
	checkAll(t)
}

// checkDB runs bbolt's own consistency check over the credential
// database, holding its lock as an auth instance would.
func checkDB(t *testing.T) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(env.s.StateDir, msg.Auth, store.FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: suiterun.Wait})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("credential database corrupt: %v", err)
	}
}

// holdShell connects to the shell socket and says nothing: with the shell
// unit at one connection, the next caller waits in the backlog for as long
// as this is held.
func holdShell(t *testing.T) func() {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(env.s.RunDir, msg.Shell+".sock"))
	if err != nil {
		t.Fatal(err)
	}
	holder := mustChild(t, "sluice-shell")
	var once sync.Once
	return func() {
		once.Do(func() {
			c.Close()
			// The holding instance sees EOF and exits; wait for that so the
			// next test starts with the shell free.
			for range 10000 {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", holder)); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

// TestKillPolicyMidCall: a policy instance is killed while it waits for
// the shell helper on behalf of a page's "create".
func TestKillPolicyMidCall(t *testing.T) {
	release := holdShell(t)
	defer release()
	b, err := signIn(userNamed("alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Send(map[string]any{"t": "create", "machine": ".host", "user": "root"}); err != nil {
		t.Fatal(err)
	}
	pid := mustChild(t, "sluice-policy")
	// Two sockets: the page's call and its own call to the shell helper.
	for i := 0; suiterun.SocketFDs(pid) < 2; i++ {
		if i == 10000 {
			t.Fatalf("policy instance %d never called the shell helper", pid)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("policy instance %d waiting on the shell helper: killing it", pid)
	mustKill(t, pid)
	_, err = b.Expect("attached")
	t.Logf("page saw: %v", err)
	var re *suiterun.RemoteError
	if !errors.As(err, &re) || re.Op != "create" || re.Code != rpc.CodeInternal || re.Message != "the policy helper stopped before answering; try again" {
		t.Errorf("page saw %v, want create: internal: the policy helper stopped before answering; try again", err)
	}
	release()
	t.Log("shell released")
	// The same page tries again and gets its shell.
	if _, err := newSession(b, "m-after-policy"); err != nil {
		t.Fatal(err)
	}
	checkAll(t)
}

// TestKillShellMidCall: the shell helper instance serving a "create" is
// stopped the moment it appears and then killed, so policy's call to it
// is cut off mid-call.
func TestKillShellMidCall(t *testing.T) {
	b, err := signIn(userNamed("bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Catching a short-lived instance is a race with its work; a round
	// it loses just creates a session, and the next round tries again.
	for round := 0; round < 20; round++ {
		caught := make(chan int, 1)
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range env.s.Children() {
					if p.Name == "sluice-shell" && unix.Kill(p.PID, unix.SIGSTOP) == nil {
						caught <- p.PID
						return
					}
				}
			}
		}()
		if err := b.Send(map[string]any{"t": "create", "machine": ".host", "user": "root"}); err != nil {
			t.Fatal(err)
		}
		var pid int
		var attached map[string]any
		var cerr error
		got := make(chan struct{})
		go func() { attached, cerr = b.Expect("attached"); close(got) }()
		select {
		case pid = <-caught:
			close(stop)
			mustKill(t, pid)
			<-got
		case <-got:
			close(stop)
		}
		if pid == 0 || cerr == nil {
			// The instance answered before it was caught, or was caught
			// after answering: a real session, kept on the books.
			if cerr != nil {
				t.Fatal(cerr)
			}
			sess, _ := attached["session"].(map[string]any)
			id, _ := sess["id"].(string)
			mark := fmt.Sprintf("m-shell-%d", round)
			if err := b.Ready(); err != nil {
				t.Fatal(err)
			}
			if err := b.Run("export MARK="+mark+"; echo \"<${MARK}|$((6*7))>\"", "<"+mark+"|42>"); err != nil {
				t.Fatal(err)
			}
			env.mu.Lock()
			env.sessions[id] = sessRec{owner: "bob", mark: mark}
			env.mu.Unlock()
			continue
		}
		var re *suiterun.RemoteError
		if !errors.As(cerr, &re) || re.Op != "create" || re.Code != msg.CodeFailed || re.Message != "the shell could not be opened; see the policy helper's log" {
			t.Errorf("page saw %v, want create: failed: the shell could not be opened; see the policy helper's log", cerr)
		}
		t.Logf("shell instance %d killed mid-call in round %d", pid, round)
		checkAll(t)
		return
	}
	t.Fatal("no shell instance was caught mid-call in 20 rounds")
}

// TestKillAllChildren: every sluice process the runner started, at once
// (frontend, ptystore and any instance), with a page attached. The login
// shells are the runner's children too (it is their subreaper once the
// shell instance that forked them exits); they are the sessions, not
// sluice, and are left alone.
func TestKillAllChildren(t *testing.T) {
	viewer, _, rec := attachedTo(t, userNamed("alice"))
	defer viewer.Close()
	if err := answers(viewer, rec.mark); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range env.s.Children() {
		if !strings.HasPrefix(p.Name, "sluice-") {
			continue
		}
		pids = append(pids, p.PID)
		unix.Kill(p.PID, unix.SIGKILL)
	}
	if len(pids) < 2 {
		t.Fatalf("runner children %v; want at least the frontend and ptystore", pids)
	}
	for _, p := range pids {
		mustGone(t, p)
	}
	mustChild(t, "sluice-frontend", pids...)
	mustChild(t, "sluice-ptystore", pids...)
	checkAll(t)
}

func mustGone(t *testing.T, pid int) {
	t.Helper()
	for range 10000 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d still there after SIGKILL", pid)
}
