package fair

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/suiterun"
)

// callers are the one-shot calls measured against the raw round trip.
type callers struct {
	raw        func(buf []byte) error
	standalone func() error // pty-list, sluice-ptystore on its own socket
	run        func() error // pty-list, sluice-ptystore under sluice run
	get        func() error // pty-get (an attach: fd in the answer, policy asked) under sluice run
}

// startStandalone runs sluice-ptystore as an admin would without systemd
// or the runner: --listen, its log on stderr into a file.
func startStandalone(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	sock := filepath.Join(dir, "ptystore.sock")
	logf, err := os.Create(filepath.Join(dir, "ptystore.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(env.s.Bin, "sluice-ptystore"), "--listen", sock, "--mode", "0600",
		"--grant-key", filepath.Join(env.s.StateDir, "credentials", "grant.key"),
		"--hangup", "off", "--policy-file", "", "--max-conns", "1024",
		"--allow", "admin to ptystore=uid:0", "--allow", "web to ptystore=uid:0")
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		logf.Close()
	})
	for deadline := time.Now().Add(suiterun.Wait); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			tb.Fatalf("standalone ptystore: no socket: %s", b)
		}
	}
}

var (
	sessOnce sync.Once
	sessID   string
	sessErr  error
)

// session is one root session of user "fair" made through the real chain
// (policy, which asks the shell helper, then ptystore), for pty-get.
func session(tb testing.TB) string {
	tb.Helper()
	sessOnce.Do(func() {
		var pol, pt *rpc.Client
		if pol, sessErr = env.s.Client(msg.Frontend, "web to policy"); sessErr != nil {
			return
		}
		if pt, sessErr = env.s.Client(msg.Frontend, "web to ptystore"); sessErr != nil {
			return
		}
		pol.Timeout, pt.Timeout = suiterun.Wait, suiterun.Wait
		g := signed(tb, "fair")
		var rep msg.CreateShellSessionReply
		fds, err := suiterun.Call(ctx(), pol, msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, nil, &rep)
		if err != nil {
			sessErr = err
			return
		}
		defer fds[0].Close()
		var put msg.PtyPutReply
		if _, sessErr = suiterun.Call(ctx(), pt, msg.OpPtyPut, msg.PtyPut{Grant: g, Session: rep.Session}, fds, &put); sessErr == nil {
			sessID = put.Session.ID
		}
	})
	if sessErr != nil {
		tb.Fatalf("session: %v", sessErr)
	}
	return sessID
}

func newCallers(tb testing.TB) callers {
	tb.Helper()
	rawPath := startRaw(tb)
	admin, err := env.s.Client(msg.Admin, "admin to ptystore")
	if err != nil {
		tb.Fatal(err)
	}
	web, err := env.s.Client(msg.Frontend, "web to ptystore")
	if err != nil {
		tb.Fatal(err)
	}
	alone := *admin
	alone.Path = startStandalone(tb)
	// The raw request is the bytes a pty-list call writes: both hellos'
	// worth of lines and a frame of the same size.
	rawReq := make([]byte, 150)
	id := session(tb)
	g := signed(tb, "fair")
	list := func(cl *rpc.Client) func() error {
		return func() error {
			_, err := suiterun.Call(ctx(), cl, msg.OpPtyList, msg.PtyList{}, nil, &msg.PtyListReply{})
			return err
		}
	}
	return callers{
		raw:        func(buf []byte) error { return rawCall(rawPath, rawReq, buf) },
		standalone: list(&alone),
		run:        list(admin),
		get: func() error {
			fds, err := suiterun.Call(ctx(), web, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id}, nil, &msg.PtyGetReply{})
			for _, f := range fds {
				f.Close()
			}
			if err == nil && len(fds) != 1 {
				return errString("pty-get answered without exactly one fd")
			}
			return err
		},
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// BenchmarkCall: one client, one call at a time. In each round the four
// calls take turns, call by call, so load on the machine falls on all
// alike; each round gives a p50 of each and the ratios to raw.
func BenchmarkCall(b *testing.B) {
	c := newCallers(b)
	buf := make([]byte, 4096)
	const perRound = 400
	r := rounds{}
	for b.Loop() {
		for i := range 50 { // warm both ends
			c.raw(buf)
			c.standalone()
			c.run()
			if i < 10 {
				c.get()
			}
		}
		for range nRounds {
			var raw, alone, run, get []time.Duration
			for i := range perRound {
				t0 := time.Now()
				if err := c.raw(buf); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := c.standalone(); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := c.run(); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				raw, alone, run = append(raw, t1.Sub(t0)), append(alone, t2.Sub(t1)), append(run, t3.Sub(t2))
				// An attach costs more (it asks policy): every fourth turn.
				if i%4 == 0 {
					t3 = time.Now()
					if err := c.get(); err != nil {
						b.Fatal(err)
					}
					get = append(get, time.Since(t3))
				}
			}
			us := func(d time.Duration) float64 { return float64(d) / 1e3 }
			rp := quantile(raw, .5)
			r.add("raw-p50-us", us(rp))
			r.add("standalone-p50-us", us(quantile(alone, .5)))
			r.add("run-p50-us", us(quantile(run, .5)))
			r.add("get-p50-us", us(quantile(get, .5)))
			r.add("standalone-p50-ratio", float64(quantile(alone, .5))/float64(rp))
			r.add("run-p50-ratio", float64(quantile(run, .5))/float64(rp))
			r.add("get-p50-ratio", float64(quantile(get, .5))/float64(rp))
			r.add("run-p99-ratio", float64(quantile(run, .99))/float64(quantile(raw, .99)))
		}
	}
	b.Logf("\n%s", r)
	r.report(b)
}

// parallel runs n calls of one from 8 clients at once and returns calls/s.
func parallel(tb testing.TB, n int, one func(buf []byte) error) float64 {
	const clients = 8
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for next.Add(1) <= int64(n) {
				if err := one(buf); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkParallel8: 8 clients at once, raw then each helper in turn in
// every round; the slowdown is raw calls/s over the helper's.
func BenchmarkParallel8(b *testing.B) {
	c := newCallers(b)
	const perRound = 2000
	noBuf := func(f func() error) func([]byte) error { return func([]byte) error { return f() } }
	r := rounds{}
	for b.Loop() {
		parallel(b, 400, c.raw)
		parallel(b, 400, noBuf(c.standalone))
		parallel(b, 400, noBuf(c.run))
		for range nRounds {
			raw := parallel(b, perRound, c.raw)
			alone := parallel(b, perRound, noBuf(c.standalone))
			run := parallel(b, perRound, noBuf(c.run))
			get := parallel(b, perRound/4, noBuf(c.get))
			r.add("raw-calls/s", raw)
			r.add("standalone-calls/s", alone)
			r.add("run-calls/s", run)
			r.add("get-calls/s", get)
			r.add("standalone-slowdown-ratio", raw/alone)
			r.add("run-slowdown-ratio", raw/run)
			r.add("get-slowdown-ratio", raw/get)
		}
	}
	b.Logf("\n%s", r)
	r.report(b)
}
