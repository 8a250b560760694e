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
	"sluice/tests/figures"
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
// or the runner: a daemon in a session of its own (daemon), --listen, its
// log on stderr into a file.
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
	cmd.SysProcAttr = daemon()
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
		var pol *rpc.Client
		if pol, sessErr = env.s.Client(msg.Frontend, msg.ProtoWebToPolicy); sessErr != nil {
			return
		}
		pol.Timeout = suiterun.Wait
		g := signed(tb, "fair")
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
		tb.Fatalf("session: %v", sessErr)
	}
	return sessID
}

func newCallers(tb testing.TB) callers {
	tb.Helper()
	rawPath := startRaw(tb)
	admin, err := env.s.Client(msg.Admin, msg.ProtoAdminToPtyStore)
	if err != nil {
		tb.Fatal(err)
	}
	web, err := env.s.Client(msg.Frontend, msg.ProtoWebToPtyStore)
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

// BenchmarkCall: one client, one call at a time. Each round times a
// block of each kind of call in turn, the order rotating from round to
// round: within a block every call follows one of its own kind, so each
// pays for what its own server does after answering (the log line) and
// for no other's. Each round gives a p50 of each and the ratios to raw.
func BenchmarkCall(b *testing.B) {
	c := newCallers(b)
	buf := make([]byte, 4096)
	perRound := figures.EnvInt("SLUICE_FAIR_CALLS", 400) // more to profile a helper under perf
	kinds := []struct {
		name string
		n    int
		call func() error
	}{
		{"raw", perRound, func() error { return c.raw(buf) }},
		{"standalone", perRound, c.standalone},
		{"run", perRound, c.run},
		{"get", perRound / 4, c.get},
	}
	r := figures.Rounds{}
	for b.Loop() {
		for _, k := range kinds { // warm both ends
			for range 50 {
				k.call()
			}
		}
		for round := range nRounds(7) {
			lat := map[string][]time.Duration{}
			for i := range kinds {
				k := kinds[(i+round)%len(kinds)]
				for range k.n {
					t := time.Now()
					if err := k.call(); err != nil {
						b.Fatalf("%s: %v", k.name, err)
					}
					lat[k.name] = append(lat[k.name], time.Since(t))
				}
			}
			us := figures.US
			rp, r99 := figures.Quantile(lat["raw"], .5), figures.Quantile(lat["raw"], .99)
			r.Add("raw-p50-us", us(rp))
			for _, k := range kinds[1:] {
				p := figures.Quantile(lat[k.name], .5)
				r.Add(k.name+"-p50-us", us(p))
				r.Add(k.name+"-p50-ratio", float64(p)/float64(rp))
			}
			r.Add("run-p99-ratio", float64(figures.Quantile(lat["run"], .99))/float64(r99))
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
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
	r := figures.Rounds{}
	for b.Loop() {
		parallel(b, 400, c.raw)
		parallel(b, 400, noBuf(c.standalone))
		parallel(b, 400, noBuf(c.run))
		for range nRounds(15) {
			raw := parallel(b, perRound, c.raw)
			alone := parallel(b, perRound, noBuf(c.standalone))
			run := parallel(b, perRound, noBuf(c.run))
			get := parallel(b, perRound/4, noBuf(c.get))
			r.Add("raw-calls/s", raw)
			r.Add("standalone-calls/s", alone)
			r.Add("run-calls/s", run)
			r.Add("get-calls/s", get)
			r.Add("standalone-slowdown-ratio", raw/alone)
			r.Add("run-slowdown-ratio", raw/run)
			r.Add("get-slowdown-ratio", raw/get)
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
}
