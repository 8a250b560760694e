package load

import (
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/suiterun"
)

const (
	callBurst  = 1000 // concurrent one-shot calls per long-running helper
	spawnBurst = 200  // parallel Accept=yes spawns
)

var (
	sessOnce sync.Once
	sessID   string
	sessErr  error
)

// loadSession is one session of user "load" made through the real chain,
// policy (which asks the shell helper and puts it into ptystore), as the
// frontend makes one; pty-get bursts fetch it.
func loadSession(tb testing.TB) string {
	tb.Helper()
	sessOnce.Do(func() {
		var pol *rpc.Client
		if pol, sessErr = env.s.Client(msg.Frontend, msg.ProtoWebToPolicy); sessErr != nil {
			return
		}
		g := signed(tb, "load")
		var rep msg.CreateShellSessionReply
		fds, err := suiterun.Call(ctx(), pol, msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, nil, &rep)
		if err != nil {
			sessErr = err
			return
		}
		defer fds[0].Close()
		sessID = rep.Session.ID // policy put it into ptystore
	})
	if sessErr != nil {
		tb.Fatalf("load session: %v", sessErr)
	}
	return sessID
}

// ptystoreBursts fires callBurst concurrent pty-list calls, then as many
// pty-get calls (each answered with a dup of the pty master).
func ptystoreBursts(tb testing.TB) (list, get Stats) {
	tb.Helper()
	id := loadSession(tb)
	admin, err := env.s.Client(msg.Admin, msg.ProtoAdminToPtyStore)
	if err != nil {
		tb.Fatal(err)
	}
	web, err := env.s.Client(msg.Frontend, msg.ProtoWebToPtyStore)
	if err != nil {
		tb.Fatal(err)
	}
	g := signed(tb, "load")
	list = burst(callBurst, func(int) error {
		_, err := suiterun.Call(ctx(), admin, msg.OpPtyList, msg.PtyList{}, nil, &msg.PtyListReply{})
		return err
	})
	get = burst(callBurst, func(int) error {
		fds, err := suiterun.Call(ctx(), web, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id}, nil, &msg.PtyGetReply{})
		for _, f := range fds {
			f.Close()
		}
		if err == nil && len(fds) != 1 {
			return errWrongFDs
		}
		return err
	})
	return list, get
}

var errWrongFDs = errorString("pty-get answered without exactly one fd")

type errorString string

func (e errorString) Error() string { return string(e) }

// rawBurst is the baseline of a call burst: n concurrent connect, 64-byte
// write, 64-byte read, close, against an echo server on a UNIX socket.
func rawBurst(tb testing.TB, n int) Stats {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "echo.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 64)
				if _, err := io.ReadFull(c, b); err == nil {
					c.Write(b)
				}
			}()
		}
	}()
	return burst(n, func(int) error {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(suiterun.Wait))
		b := make([]byte, 64)
		if _, err := c.Write(b); err != nil {
			return err
		}
		_, err = io.ReadFull(c, b)
		return err
	})
}

// spawnBursts fires spawnBurst concurrent login-begin calls at the auth
// socket: each one is a fresh sluice-auth process the runner starts.
func spawnBurstAuth(tb testing.TB) Stats {
	tb.Helper()
	web, err := env.s.Client(msg.Frontend, msg.ProtoWebToAuth)
	if err != nil {
		tb.Fatal(err)
	}
	return burst(spawnBurst, func(int) error {
		_, err := suiterun.Call(ctx(), web, msg.OpLoginBegin, msg.LoginBegin{}, nil, &msg.LoginBeginReply{})
		return err
	})
}

// spawnBurstPolicy fires spawnBurst concurrent create-shell-session calls
// that policy refuses (root only, asked for nobody): each is a fresh
// sluice-policy process deciding, without the shell helper behind it or
// a database lock, so it measures the spawn path alone. The refusal is
// the expected answer.
func spawnBurstPolicy(tb testing.TB) Stats {
	tb.Helper()
	web, err := env.s.Client(msg.Frontend, msg.ProtoWebToPolicy)
	if err != nil {
		tb.Fatal(err)
	}
	g := signed(tb, "load")
	return burst(spawnBurst, func(int) error {
		fds, err := suiterun.Call(ctx(), web, msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "nobody", Grant: g}, nil, &msg.CreateShellSessionReply{})
		for _, f := range fds {
			f.Close()
		}
		if rpc.CodeOf(err) == msg.CodeDenied {
			return nil
		}
		if err == nil {
			return errorString("policy let load be nobody")
		}
		return err
	})
}

// execBurst is the spawn baseline: n parallel fork+exec+wait of the same
// sluice-auth binary, which prints its usage and exits.
func execBurst(tb testing.TB, n int) Stats {
	tb.Helper()
	exe := filepath.Join(env.s.Bin, "sluice-auth")
	return burst(n, func(int) error {
		cmd := exec.Command(exe, "-h")
		cmd.Stdout, cmd.Stderr = nil, nil
		return cmd.Run()
	})
}

// clearUnderLoad are the errors an overloaded suite may answer with, all
// of which a caller can act on: busy (ptystore at its connection cap),
// timeout (the caller's 5 s, the same as the frontend's), a helper that
// gave up before answering, and remote busy (an auth instance that waited
// its 3 s for the credential database's lock). Anything else is a wrong
// answer.
var clearUnderLoad = map[string]bool{"busy": true, "timeout": true, "handshake": true, "remote busy": true}

func checkBurst(t *testing.T, name string, st Stats) {
	t.Helper()
	for k := range st.ByKind {
		if !clearUnderLoad[k] {
			t.Errorf("%s: %v; %q is not an overload answer", name, st, k)
		}
	}
	if st.Errors == st.N {
		t.Errorf("%s: %v; nothing got through", name, st)
	}
}

// TestCallBursts: 1,000 concurrent calls to ptystore (list, then get)
// beside as many raw round trips, and 200 parallel Accept=yes spawns of
// policy and of auth. Overload answers are counted and logged; any other error
// fails the test, as does a burst in which nothing got through.
func TestCallBursts(t *testing.T) {
	raw := rawBurst(t, callBurst)
	t.Logf("raw unix round trip x%d: %v", callBurst, raw)
	list, get := ptystoreBursts(t)
	t.Logf("ptystore pty-list x%d: %v", callBurst, list)
	t.Logf("ptystore pty-get  x%d: %v", callBurst, get)
	checkBurst(t, "pty-list", list)
	checkBurst(t, "pty-get", get)

	// The fork+exec baseline is left to BenchmarkBurstSpawn: it costs as
	// much as the spawns themselves and asserts nothing.
	pol := spawnBurstPolicy(t)
	t.Logf("policy create-shell-session, refused (Accept=yes) x%d: %v", spawnBurst, pol)
	checkBurst(t, "policy spawns", pol)
	auth := spawnBurstAuth(t)
	t.Logf("auth login-begin (Accept=yes) x%d: %v", spawnBurst, auth)
	checkBurst(t, "auth spawns", auth)
}

func report(b *testing.B, prefix string, st, base Stats) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(st.P50), prefix+"-p50-ms")
	b.ReportMetric(ms(st.P99), prefix+"-p99-ms")
	b.ReportMetric(ms(st.Max), prefix+"-max-ms")
	b.ReportMetric(float64(st.Errors), prefix+"-errors")
	b.ReportMetric(float64(st.Busy), prefix+"-busy")
	b.ReportMetric(ms(base.P50), prefix+"-base-p50-ms")
	b.ReportMetric(ms(st.P50)/ms(base.P50), prefix+"-p50-ratio")
	b.ReportMetric(ms(st.P99)/ms(base.P99), prefix+"-p99-ratio")
}

// BenchmarkBurstPtyStore: 1,000 concurrent pty-get calls (an fd on each
// answer) per iteration, against 1,000 concurrent raw round trips.
func BenchmarkBurstPtyStore(b *testing.B) {
	var list, get, raw Stats
	for b.Loop() {
		raw = rawBurst(b, callBurst)
		list, get = ptystoreBursts(b)
	}
	b.Logf("raw %v\nlist %v\nget %v", raw, list, get)
	report(b, "list", list, raw)
	report(b, "get", get, raw)
}

// BenchmarkBurstSpawn: 200 parallel Accept=yes spawns per iteration, of
// policy (decision only) and of auth (usernameless login-begin, which
// opens no database), against 200 parallel bare fork+exec of sluice-auth.
func BenchmarkBurstSpawn(b *testing.B) {
	var pol, auth, base Stats
	for b.Loop() {
		base = execBurst(b, spawnBurst)
		pol = spawnBurstPolicy(b)
		auth = spawnBurstAuth(b)
	}
	b.Logf("exec %v\npolicy %v\nauth %v", base, pol, auth)
	report(b, "policy", pol, base)
	report(b, "auth", auth, base)
}
