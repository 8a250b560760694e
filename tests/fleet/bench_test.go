package fleet

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sluice/msg"
	"sluice/tests/figures"
	"sluice/tests/fleet/fleetenv"
	"sluice/tests/suiterun"
)

// The fleet's figures (issue 17), run by `make bench`: gateway → host
// through sluice against plain `ssh -tt host` on the same namespaced
// hosts, the same sshd and the same ssh binary, in the same run. The
// sluice side is the whole path a browser has: a WebSocket client (this
// process) to the gateway's frontend (a process of its own, under its
// runner), the fleet helper's ssh and pty, the host's sshd, sluice-relay
// and the session's pty held by the host's ptystore. The baseline is
// ssh on a pty this process reads, as a user's terminal runs `ssh -t`.
// Every figure is the median of alternating rounds with min–max
// (units NAME, NAME-min, NAME-max), as in tests/fair.

const benchRounds = 7

// benchFleet is three hosts that let alice be root, and the gateway's
// page; each host's sshd also lets the baseline's plain account in.
func benchFleet(b *testing.B) *env {
	if testing.Short() {
		b.Skip("the fleet benchmarks need a fleet of namespaces")
	}
	allow := "allow alice as root on .host\n"
	e := newFleet(b, fleetenv.Options{Page: true, Baseline: true,
		Policies: map[string]string{"h1": allow, "h2": allow, "h3": allow}})
	return e
}

// BenchmarkEcho: one key at a time from a WebSocket client through the
// gateway to `stty raw; cat` on h1 and back, against the same program
// under `ssh -tt h1` on a pty this process reads; per round a block of
// each, the order alternating. A third path, fleetpty, types into the
// gateway's pty as the fleet helper hands it to the frontend: what of
// the added time is the fleet's (ssh, relay, framing), what the
// frontend's and the WebSocket's.
func BenchmarkEcho(b *testing.B) {
	perRound := figures.EnvInt("SLUICE_FLEET_ECHO_KEYS", 500)
	e := benchFleet(b)
	a := pageUser(b, e, "alice")
	br, _, err := remotePage(e, a, "h1")
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	if err := br.Run(figures.EchoScript, "RDY"); err != nil {
		b.Fatal(err)
	}
	m, stop := plainSSH(b, e, e.Hosts["h1"], figures.EchoScript)
	defer stop()
	if err := readUntil(m, "RDY"); err != nil {
		b.Fatal(err)
	}
	// The gateway's pty as the fleet helper hands it to the frontend,
	// read by this process: the fleet's part of the path without the
	// frontend and the WebSocket.
	ctx := context.Background()
	g := e.SignIn(ctx, "alice")
	_, fp, err := e.Open(ctx, "h1", e.HostGrant(ctx, g, "h1"), msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root"})
	if err != nil {
		b.Fatal(err)
	}
	defer fp.Close()
	if _, err := typeInto(fp, figures.EchoScript+"\n"); err != nil {
		b.Fatal(err)
	}
	if err := readUntil(fp, "RDY"); err != nil {
		b.Fatal(err)
	}
	one := make([]byte, 1)
	wsEcho := figures.PageEcho(br)
	ptyEcho := func(f *os.File) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			t := time.Now()
			if _, err := typeInto(f, "k"); err != nil {
				return 0, err
			}
			_, err := io.ReadFull(f, one)
			if err == nil && one[0] != 'k' {
				err = fmt.Errorf("%s echoed %q", f.Name(), one)
			}
			return time.Since(t), err
		}
	}
	sshEcho, fleetEcho := ptyEcho(m), ptyEcho(fp)
	block := func(f func() (time.Duration, error)) []time.Duration {
		var ds []time.Duration
		for range perRound {
			d, err := f()
			if err != nil {
				b.Fatal(err)
			}
			ds = append(ds, d)
		}
		return ds
	}
	r := figures.Rounds{}
	for b.Loop() {
		for range 200 { // warm the paths up
			wsEcho()
			sshEcho()
			fleetEcho()
		}
		for i := range benchRounds {
			// Each path first, second and third in turn.
			ls := map[string][]time.Duration{}
			paths := []string{"ssh", "ws", "fleet"}
			fs := map[string]func() (time.Duration, error){"ssh": sshEcho, "ws": wsEcho, "fleet": fleetEcho}
			for k := range paths {
				p := paths[(i+k)%len(paths)]
				ls[p] = block(fs[p])
			}
			sl, wl, fl := ls["ssh"], ls["ws"], ls["fleet"]
			us := figures.US
			s50, s99, w50, w99 := figures.Quantile(sl, .5), figures.Quantile(sl, .99), figures.Quantile(wl, .5), figures.Quantile(wl, .99)
			f50 := figures.Quantile(fl, .5)
			r.Add("fleetpty-p50-us", us(f50))
			r.Add("fleetpty-p50-added-us", us(f50-s50))
			r.Add("ssh-p50-us", us(s50))
			r.Add("ssh-p99-us", us(s99))
			r.Add("echo-p50-us", us(w50))
			r.Add("echo-p99-us", us(w99))
			r.Add("echo-p50-added-us", us(w50-s50))
			r.Add("echo-p50-ratio", float64(w50)/float64(s50))
			r.Add("echo-p99-ratio", float64(w99)/float64(s99))
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
}

// BenchmarkCat100MB: `cat` of a 100 MB file on h1 through the gateway to a
// WebSocket client that acknowledges what it reads, against `ssh -tt h1`
// running the same cat, read by this process through the same sshd; a
// fresh session (and ssh connection) for each, alternating first.
// SLUICE_FLEET_CAT_MB makes the file smaller.
func BenchmarkCat100MB(b *testing.B) {
	size := figures.EnvInt("SLUICE_FLEET_CAT_MB", 100) << 20
	nRounds := figures.EnvInt("SLUICE_FLEET_CAT_ROUNDS", 5)
	e := benchFleet(b)
	file := filepath.Join(e.Dir, "cat-file")
	figures.CatFile(b, file, size)
	script := figures.CatScript(file)
	a := pageUser(b, e, "alice")
	catSSH := func() time.Duration {
		m, stop := plainSSH(b, e, e.Hosts["h1"], script)
		defer stop()
		if err := readUntil(m, "RDY"); err != nil {
			b.Fatal(err)
		}
		d, err := figures.PtyCat(m, size)
		if err != nil {
			b.Fatalf("cat through ssh: %v", err)
		}
		return d
	}
	catSluice := func() time.Duration {
		br, _, err := remotePage(e, a, "h1")
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close()
		d, err := figures.PageCat(br, script, size)
		if err != nil {
			b.Fatalf("cat through the gateway: %v", err)
		}
		return d
	}
	r := figures.Rounds{}
	for b.Loop() {
		catSSH() // the file into the page cache
		for i := range nRounds {
			var s, w time.Duration
			if i%2 == 0 {
				s, w = catSSH(), catSluice()
			} else {
				w, s = catSluice(), catSSH()
			}
			mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
			r.Add("ssh-MB/s", mbps(s))
			r.Add("gateway-MB/s", mbps(w))
			r.Add("tput-ratio", s.Seconds()/w.Seconds())
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
}

// BenchmarkSessions100: 100 sessions spread over the three hosts, opened
// through the gateway 16 at a time, each from a page of its own (the
// pages signed in first, one after another); once all are open
// each prints its own seeded pseudo-random stream and every byte is
// compared at its page. Figures: the time to open all, the time until
// every stream has arrived, and sessions per second over both.
// SLUICE_FLEET_SESSIONS and SLUICE_FLEET_SESSION_KB change the sizes.
func BenchmarkSessions100(b *testing.B) {
	n := figures.EnvInt("SLUICE_FLEET_SESSIONS", 100)
	size := figures.EnvInt("SLUICE_FLEET_SESSION_KB", 1024) << 10
	e := benchFleet(b)
	r := figures.Rounds{}
	for b.Loop() {
		open, streamed := manySessions(b, e, n, size)
		r.Add("open-s", open.Seconds())
		r.Add("stream-s", streamed.Seconds())
		r.Add("sessions/s", float64(n)/(open+streamed).Seconds())
		r.Add("stream-MB/s", float64(n*size)/streamed.Seconds()/1e6)
	}
	b.Logf("\n%d sessions of %d bytes each:\n%s", n, size, r)
	r.Report(b)
}

// manySessions opens n sessions over the hosts through the gateway at
// once, then has each print size bytes of its own stream and checks every
// byte at its page. It fails tb on the first wrong, missing or extra byte.
func manySessions(tb testing.TB, e *env, n, size int) (open, streamed time.Duration) {
	tb.Helper()
	hosts := []string{"h1", "h2", "h3"}
	gen := genBin(tb, e)
	a := pageUser(tb, e, "alice")
	pages := make([]*suiterun.Browser, n)
	errs := make([]error, n)
	defer func() {
		for _, p := range pages {
			if p != nil {
				p.Close()
			}
		}
	}()
	// Signed in one after another: one passkey's signature counter must
	// reach auth in order (auth refuses a counter going backwards).
	for i := range n {
		var err error
		if pages[i], err = signedIn(e, a); err != nil {
			tb.Fatalf("sign-in %d: %v", i, err)
		}
	}
	// At most openAtOnce opening at a time: each holds a connection to
	// the fleet helper for its ssh handshake, and the helper refuses
	// connections past its cap (64), which the page shows as an error.
	const openAtOnce = 16
	sem := make(chan struct{}, openAtOnce)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			host := hosts[i%len(hosts)]
			_, errs[i] = openOn(pages[i], host, "")
			if errs[i] == nil {
				errs[i] = pages[i].Ready()
			}
		}()
	}
	wg.Wait()
	open = time.Since(t0)
	for i, err := range errs {
		if err != nil {
			tb.Fatalf("session %d: %v", i, err)
		}
	}
	t1 := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = checkStream(pages[i], gen, uint64(i)+1, size)
		}()
	}
	wg.Wait()
	streamed = time.Since(t1)
	for i, err := range errs {
		if err != nil {
			tb.Fatalf("session %d on %s: %v", i, hosts[i%len(hosts)], err)
		}
	}
	return open, streamed
}

// checkStream runs the generator for seed in the page's shell and
// compares every byte it prints with the same stream made here: a wrong
// or missing byte, or one more in the last frame, fails.
func checkStream(b *suiterun.Browser, gen string, seed uint64, size int) error {
	line := fmt.Sprintf("stty raw -echo; printf 'R%%sY' D; %s=%d,%d exec %s -test.run='^$'", genEnv, seed, size, gen)
	if err := b.Run(line, "RDY"); err != nil {
		return err
	}
	want := newStream(seed)
	var got int
	var bad error
	err := b.Stream(func(p []byte) bool {
		for _, c := range p {
			if got >= size {
				bad = fmt.Errorf("byte %q past the stream's %d", c, size)
				return false
			}
			if w := want.next(); c != w {
				bad = fmt.Errorf("byte %d is %q, want %q", got, c, w)
				return false
			}
			got++
		}
		return got < size
	}, nil)
	if bad != nil {
		return bad
	}
	if err != nil {
		return fmt.Errorf("after %d of %d bytes: %w", got, size, err)
	}
	return nil
}

// TestSessionsByteChecked is BenchmarkSessions100 at make test's size:
// nine sessions, three on each host, 256 KiB each, every byte checked.
func TestSessionsByteChecked(t *testing.T) {
	allow := "allow alice as root on .host\n"
	e := newFleet(t, fleetenv.Options{Page: true, Policies: map[string]string{"h1": allow, "h2": allow, "h3": allow}})
	open, streamed := manySessions(t, e, 9, 256<<10)
	t.Logf("9 sessions opened in %v, streams of 256 KiB checked in %v", open, streamed)
}
