package fair

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/pty"
	"sluice/tests/figures"
	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

// direct starts sh -c script on a fresh pty owned by this process and
// returns the master, as the baseline of every terminal figure.
func direct(tb testing.TB, script string) (*os.File, *exec.Cmd) {
	tb.Helper()
	m, s, err := pty.Open()
	if err != nil {
		tb.Fatal(err)
	}
	if err := pty.SetSize(m, 40, 120); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", script)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	err = cmd.Start()
	s.Close()
	if err != nil {
		tb.Fatal(err)
	}
	return m, cmd
}

// user enrolls a sluice user in suite s with a passkey.
func user(tb testing.TB, s *suiterun.Suite, name string) *softauthn.Authenticator {
	tb.Helper()
	tok, err := s.Enroll(ctx(), name)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := s.Dial()
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	a := softauthn.New("localhost", s.Origin)
	if err := b.Register(a, tok); err != nil {
		tb.Fatal(err)
	}
	return a
}

// page signs in with a and opens a root shell on the host, ready for
// input.
func page(tb testing.TB, s *suiterun.Suite, a *softauthn.Authenticator) *suiterun.Browser {
	tb.Helper()
	b, err := s.Dial()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	if err := b.SignIn(a); err != nil {
		tb.Fatal(err)
	}
	if _, err := b.Create(); err != nil {
		tb.Fatal(err)
	}
	if err := b.Ready(); err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkEcho: one key through WebSocket, frontend, ptystore's pty and
// the echoing program back to this process, against the same program on
// a pty read directly; per round a block of each.
func BenchmarkEcho(b *testing.B) {
	const perRound = 1000
	a := user(b, env.s, "echo")
	br := page(b, env.s, a)
	if err := br.Run(figures.EchoScript, "RDY"); err != nil {
		b.Fatal(err)
	}
	m, cmd := direct(b, figures.EchoScript)
	defer func() { m.Close(); cmd.Process.Kill(); cmd.Wait() }()
	one := make([]byte, 3)
	if _, err := io.ReadFull(m, one); err != nil {
		b.Fatal(err)
	}
	key := []byte("k")
	wsEcho := figures.PageEcho(br)
	ptyEcho := func() (time.Duration, error) {
		t := time.Now()
		if _, err := m.Write(key); err != nil {
			return 0, err
		}
		_, err := io.ReadFull(m, one[:1])
		return time.Since(t), err
	}
	relay, relayPid := startMinRelay(b, figures.EchoScript)
	mr := dialMinRelay(b, relay)
	defer mr.Close()
	fe, err := env.s.WaitChild("sluice-frontend")
	if err != nil {
		b.Fatal(err)
	}
	r := figures.Rounds{}
	for b.Loop() {
		for range 200 {
			wsEcho()
			ptyEcho()
			mr.echo()
		}
		us := figures.US
		for range nRounds(15) {
			var dl, wl []time.Duration
			for range perRound {
				d, err := ptyEcho()
				if err != nil {
					b.Fatal(err)
				}
				dl = append(dl, d)
			}
			sw0, cpu0 := switches(b, fe), cpuTime(b, fe)
			for range perRound {
				d, err := wsEcho()
				if err != nil {
					b.Fatal(err)
				}
				wl = append(wl, d)
			}
			r.Add("frontend-switches-per-key", float64(switches(b, fe)-sw0)/perRound)
			// CPU per key swings less with the machine's load than latency.
			r.Add("frontend-cpu-us-per-key", us(cpuTime(b, fe)-cpu0)/perRound)
			// The floor of any WebSocket terminal, reported, not targeted.
			var ml []time.Duration
			sw0, cpu0 = switches(b, relayPid), cpuTime(b, relayPid)
			for range perRound {
				d, err := mr.echo()
				if err != nil {
					b.Fatal(err)
				}
				ml = append(ml, d)
			}
			r.Add("minrelay-switches-per-key", float64(switches(b, relayPid)-sw0)/perRound)
			r.Add("minrelay-cpu-us-per-key", us(cpuTime(b, relayPid)-cpu0)/perRound)
			d50, d99, w50, w99 := figures.Quantile(dl, .5), figures.Quantile(dl, .99), figures.Quantile(wl, .5), figures.Quantile(wl, .99)
			r.Add("direct-p50-us", us(d50))
			r.Add("direct-p99-us", us(d99))
			r.Add("echo-p50-us", us(w50))
			r.Add("echo-p99-us", us(w99))
			r.Add("echo-p50-ratio", float64(w50)/float64(d50))
			r.Add("echo-p99-ratio", float64(w99)/float64(d99))
			m50, m99 := figures.Quantile(ml, .5), figures.Quantile(ml, .99)
			r.Add("minrelay-p50-us", us(m50))
			r.Add("minrelay-p99-us", us(m99))
			r.Add("minrelay-p50-ratio", float64(m50)/float64(d50))
			r.Add("minrelay-p99-ratio", float64(m99)/float64(d99))
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
}

const catSize = 100 << 20

// BenchmarkCat100MB: `cat` of a 100 MB file through the whole suite to a
// page that acknowledges what it has read, against the same cat on a pty
// read directly; a fresh session per round.
func BenchmarkCat100MB(b *testing.B) {
	const rounds5 = 5
	file := filepath.Join(env.dir, "100MB")
	figures.CatFile(b, file, catSize)
	script := figures.CatScript(file)
	a := user(b, env.s, "cat")
	catDirect := func() time.Duration {
		m, cmd := direct(b, script)
		defer func() { m.Close(); cmd.Wait() }()
		if _, err := io.ReadFull(m, make([]byte, 3)); err != nil {
			b.Fatal(err)
		}
		d, err := figures.PtyCat(m, catSize)
		if err != nil {
			b.Fatalf("direct cat: %v", err)
		}
		return d
	}
	fe, err := env.s.WaitChild("sluice-frontend")
	if err != nil {
		b.Fatal(err)
	}
	self := os.Getpid()
	// CPU of the client and of the server over one cat, in ms: the
	// wall-clock figures swing with the machine's other load, the CPU
	// each side spends per 100 MB much less.
	var cpu struct{ client, server time.Duration }
	catSluice := func() time.Duration {
		br := page(b, env.s, a)
		defer br.Close()
		c0, s0 := cpuTime(b, self), cpuTime(b, fe)
		d, err := figures.PageCat(br, script, catSize)
		if err != nil {
			b.Fatalf("cat through sluice: %v", err)
		}
		cpu.client, cpu.server = cpuTime(b, self)-c0, cpuTime(b, fe)-s0
		return d
	}
	relay, relayPid := startMinRelay(b, script)
	var relayCPU struct{ client, server time.Duration }
	catRelay := func() time.Duration {
		p := dialMinRelay(b, relay)
		defer p.Close()
		c0, s0 := cpuTime(b, self), cpuTime(b, relayPid)
		d, err := p.cat(catSize)
		if err != nil {
			b.Fatalf("cat through the minimal relay: %v", err)
		}
		relayCPU.client, relayCPU.server = cpuTime(b, self)-c0, cpuTime(b, relayPid)-s0
		return d
	}
	r := figures.Rounds{}
	for b.Loop() {
		catDirect() // the file into the page cache
		for range rounds5 {
			d := catDirect()
			w := catSluice()
			m := catRelay()
			mbps := func(d time.Duration) float64 { return catSize / d.Seconds() / 1e6 }
			r.Add("direct-MB/s", mbps(d))
			r.Add("websocket-MB/s", mbps(w))
			r.Add("tput-ratio", d.Seconds()/w.Seconds())
			// The floor of any WebSocket terminal, reported, not targeted.
			r.Add("minrelay-MB/s", mbps(m))
			r.Add("minrelay-tput-ratio", d.Seconds()/m.Seconds())
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			r.Add("client-cpu-ms", ms(cpu.client))
			r.Add("frontend-cpu-ms", ms(cpu.server))
			r.Add("minrelay-client-cpu-ms", ms(relayCPU.client))
			r.Add("minrelay-cpu-ms", ms(relayCPU.server))
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
}

// switches is how many times the threads of process pid have been off a
// CPU, asleep or preempted (voluntary and nonvoluntary context switches):
// per key, the frontend's wake-ups on the echo's way.
func switches(tb testing.TB, pid int) int {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("threads of %d: %v", pid, err)
	}
	n := 0
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // a thread gone since the glob; its count goes with it
		}
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) == 2 && strings.HasSuffix(f[0], "_ctxt_switches:") {
				k, _ := strconv.Atoi(f[1])
				n += k
			}
		}
	}
	return n
}

// cpuTime is how long the threads of process pid have run on a CPU
// (from the scheduler's own accounting, in nanoseconds: a 100 MB cat
// takes too little CPU for /proc's clock ticks). Threads that have
// ended are not counted, so take it around work whose threads last.
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("threads of %d: %v", pid, err)
	}
	var n time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			n += time.Duration(ns)
		}
	}
	return n
}

// statusKiB is a process's memory lines of /proc/PID/status, in KiB
// ("VmRSS:", "RssAnon:", "RssFile:", ...).
func statusKiB(tb testing.TB, pid int) map[string]float64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m[f[0]] = kb
		}
	}
	if _, ok := m["VmRSS:"]; !ok {
		tb.Fatal("no VmRSS")
	}
	return m
}

// BenchmarkSessionMemory: the frontend's resident memory per idle
// session (a page signed in, a shell with its prompt), from a fresh
// frontend over its first 50 sessions; a fresh suite per round.
func BenchmarkSessionMemory(b *testing.B) {
	const sessions = 50
	r := figures.Rounds{}
	for b.Loop() {
		for i := range 5 {
			s, err := suiterun.Start(suiterun.Options{Dir: filepath.Join(env.dir, fmt.Sprintf("mem%d", i)), Bin: env.s.Bin, FreshRootHome: true})
			if err != nil {
				b.Fatal(err)
			}
			pid, err := s.WaitChild("sluice-frontend")
			if err != nil {
				s.Stop()
				b.Fatal(err)
			}
			// Enrolling goes through auth, not the frontend.
			tok, err := s.Enroll(ctx(), "mem")
			if err != nil {
				s.Stop()
				b.Fatal(err)
			}
			before := statusKiB(b, pid)
			var pages []*suiterun.Browser
			a := softauthn.New("localhost", s.Origin)
			reg, err := s.Dial()
			if err == nil {
				err = reg.Register(a, tok)
				reg.Close()
			}
			if err != nil {
				s.Stop()
				b.Fatal(err)
			}
			for range sessions {
				pages = append(pages, page(b, s, a))
			}
			time.Sleep(500 * time.Millisecond) // let the last outputs settle
			after := statusKiB(b, pid)
			for _, p := range pages {
				p.Close()
			}
			if err := s.Stop(); err != nil {
				b.Fatal(err)
			}
			grew := func(k string) float64 { return (after[k] - before[k]) / sessions }
			r.Add("session-KiB", grew("VmRSS:"))
			// The target is on VmRSS; its parts say where to look: the
			// heap and stacks are anonymous, code first run is file.
			r.Add("session-anon-KiB", grew("RssAnon:"))
			r.Add("session-file-KiB", grew("RssFile:"))
			r.Add("frontend-start-KiB", before["VmRSS:"])
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
}
