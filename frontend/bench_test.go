package frontend

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/frontend/hub"
	"sluice/frontend/internal/ptyutil"
)

// The figures of issue 5, each measured beside its baseline in the same
// run. Run with: go test -run '^$' -bench . -benchtime 1x ./frontend/

const catSize = 100 << 20

func bigFile(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "100MB")
	line := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), 2)
	buf := bytes.Repeat(line, catSize/len(line)+1)[:catSize]
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// catDirect reads `cat FILE` straight off the pty master.
func catDirect(b *testing.B, file string) (int64, time.Duration) {
	m, cmd, err := ptyutil.Command(80, 24, "sh", "-c", "stty raw -echo; exec cat "+file)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	defer cmd.Wait()
	buf := make([]byte, 64<<10)
	var n int64
	start := time.Now()
	for {
		k, err := m.Read(buf)
		n += int64(k)
		if err != nil {
			break // EIO: cat is done
		}
	}
	return n, time.Since(start)
}

// BenchmarkCat100MB: `cat` of a 100 MB file through pty, frontend and
// WebSocket to a client that acknowledges as it reads, against reading
// the same pty directly.
func BenchmarkCat100MB(b *testing.B) {
	file := bigFile(b)
	l := startLocal(b, hub.Options{}, func(string) []string {
		return []string{"sh", "-c", "stty raw -echo; exec cat " + file}
	})
	b.SetBytes(catSize)
	var direct, ws time.Duration
	for i := 0; i < b.N; i++ {
		n, d := catDirect(b, file)
		if n != catSize {
			b.Fatalf("direct read %d bytes", n)
		}
		direct += d
		c := l.dial(b)
		start := time.Now()
		c.create(b, "x")
		for {
			if _, exit := c.read(b, true); exit {
				break
			}
		}
		ws += time.Since(start)
		if c.got != catSize {
			b.Fatalf("websocket client got %d bytes", c.got)
		}
		c.ws.Close()
	}
	mbps := func(d time.Duration) float64 { return float64(catSize) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(direct), "direct-MB/s")
	b.ReportMetric(mbps(ws), "websocket-MB/s")
	b.ReportMetric(direct.Seconds()/ws.Seconds(), "ratio")
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkEcho: one keystroke to a program that echoes it (cat in raw
// mode, as readline does) and back, through the WebSocket, against the same
// round trip on the pty directly.
func BenchmarkEcho(b *testing.B) {
	const rounds = 2000
	argv := []string{"sh", "-c", "stty raw -echo; printf R; exec cat"}
	l := startLocal(b, hub.Options{}, func(string) []string { return argv })
	var directAll, wsAll []time.Duration
	for i := 0; i < b.N; i++ {
		m, cmd, err := ptyutil.Command(80, 24, argv[0], argv[1:]...)
		if err != nil {
			b.Fatal(err)
		}
		one := make([]byte, 1)
		io.ReadFull(m, one) // R: stty has run
		for r := 0; r < rounds; r++ {
			t := time.Now()
			m.Write([]byte("k"))
			if _, err := io.ReadFull(m, one); err != nil {
				b.Fatal(err)
			}
			directAll = append(directAll, time.Since(t))
		}
		m.Close()
		cmd.Process.Kill()
		cmd.Wait()

		c := l.dial(b)
		c.create(b, "x")
		c.until(b, "R")
		for r := 0; r < rounds; r++ {
			t := time.Now()
			c.ws.WriteMessage(2, []byte("k"))
			if d, _ := c.read(b, false); len(d) != 1 {
				b.Fatalf("echo of %d bytes", len(d))
			}
			wsAll = append(wsAll, time.Since(t))
			c.ack(b)
		}
		c.ws.Close()
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	b.ReportMetric(us(percentile(directAll, .5)), "direct-p50-µs")
	b.ReportMetric(us(percentile(directAll, .99)), "direct-p99-µs")
	b.ReportMetric(us(percentile(wsAll, .5)), "websocket-p50-µs")
	b.ReportMetric(us(percentile(wsAll, .99)), "websocket-p99-µs")
}

// BenchmarkCtrlCFlood: `yes` floods a shell whose client reads only 1 MB/s;
// time from sending Ctrl-C to the prompt coming back. The baseline is the
// same on the pty read directly at 1 MB/s.
func BenchmarkCtrlCFlood(b *testing.B) {
	argv := []string{"env", "PS1=PROMPT> ", "bash", "--norc", "--noprofile", "-i"}
	l := startLocal(b, hub.Options{}, func(string) []string { return argv })
	const rate = 1 << 20 // bytes per second
	var direct, ws time.Duration
	for i := 0; i < b.N; i++ {
		// Direct: read the master at 1 MB/s.
		m, cmd, err := ptyutil.Command(80, 24, argv[0], argv[1:]...)
		if err != nil {
			b.Fatal(err)
		}
		direct += ctrlC(b, func(p []byte) { m.Write(p) }, func() []byte {
			buf := make([]byte, 16<<10)
			k, err := m.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			return buf[:k]
		}, rate)
		m.Close()
		cmd.Process.Kill()
		cmd.Wait()

		c := l.dial(b)
		c.create(b, "x")
		ws += ctrlC(b, func(p []byte) { c.ws.WriteMessage(2, p) }, func() []byte {
			d, exit := c.read(b, false)
			if exit {
				b.Fatal("session ended")
			}
			c.ack(b)
			return d
		}, rate)
		c.ws.Close()
	}
	b.ReportMetric(float64(direct.Milliseconds())/float64(b.N), "direct-ms")
	b.ReportMetric(float64(ws.Milliseconds())/float64(b.N), "websocket-ms")
}

// ctrlC waits for the prompt, starts yes, reads for a second at rate,
// sends Ctrl-C and returns how long until the prompt is back, still
// reading at rate.
func ctrlC(b *testing.B, write func([]byte), read func() []byte, rate int) time.Duration {
	var seen []byte
	waitFor := func(marker string, paced bool, start time.Time) {
		var got int
		for !bytes.Contains(seen, []byte(marker)) {
			p := read()
			got += len(p)
			seen = append(seen[max(0, len(seen)-64):], p...)
			if paced {
				// Sleep off what reading at rate would have taken.
				if ahead := time.Duration(got)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
	}
	waitFor("PROMPT> ", false, time.Now())
	write([]byte("yes\r"))
	start := time.Now()
	var got int
	for time.Since(start) < time.Second {
		got += len(read())
		if ahead := time.Duration(got)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	seen = seen[:0]
	t := time.Now()
	write([]byte{3})
	waitFor("PROMPT> ", true, t)
	return time.Since(t)
}

func rss(b *testing.B) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkIdleSessions: the frontend's memory per idle session with 200
// sessions open, each with a prompt on screen and a connected viewer. The
// clients run in a child process so only the frontend's side is counted.
func BenchmarkIdleSessions(b *testing.B) {
	const sessions = 200
	l := startLocal(b, hub.Options{}, func(string) []string {
		return []string{"sh", "-c", "printf 'user@host:~$ '; exec cat"}
	})
	for i := 0; i < b.N; i++ {
		// The shells are made before measuring: in the suite the shell
		// helper starts them, not the frontend.
		l.be.ready = make(chan *os.File, sessions)
		for j := 0; j < sessions; j++ {
			m, cmd, err := l.be.spawn("x")
			if err != nil {
				b.Fatal(err)
			}
			go cmd.Wait()
			l.be.ready <- m
		}
		before := rss(b)
		cmd := exec.Command(os.Args[0], "-test.run", "^TestIdleClients$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SLUICE_IDLE_CLIENTS="+fmt.Sprint(sessions), "SLUICE_IDLE_WS="+l.ws, "SLUICE_IDLE_ORIGIN="+l.origin)
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		stdin, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		// The child prints "ready" once every session shows its prompt.
		buf := make([]byte, 0, 64)
		one := make([]byte, 1)
		for !bytes.Contains(buf, []byte("ready")) {
			if _, err := stdout.Read(one); err != nil {
				b.Fatalf("client process: %v (%q)", err, buf)
			}
			buf = append(buf, one[0])
		}
		if n := l.srv.Hub().Len(); n != sessions {
			b.Fatalf("%d sessions in the hub", n)
		}
		after := rss(b)
		b.ReportMetric(float64(after-before)/sessions/1024, "KiB/session")
		stdin.Close()
		cmd.Wait()
	}
}

// TestIdleClients is the client half of BenchmarkIdleSessions, run in a
// child process; it does nothing otherwise.
func TestIdleClients(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SLUICE_IDLE_CLIENTS"))
	if n == 0 {
		return
	}
	l := &local{ws: os.Getenv("SLUICE_IDLE_WS"), origin: os.Getenv("SLUICE_IDLE_ORIGIN")}
	var cs []*wsClient
	for i := 0; i < n; i++ {
		c := l.dial(t)
		c.create(t, "x")
		c.until(t, "$ ")
		cs = append(cs, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range cs {
		c.ws.Close()
	}
}

// BenchmarkTail: a shell prints and exits at once; the client must get
// every byte up to the last, then the end. Reports runs with a lost tail
// (must be 0) beside the same check on the pty read directly.
func BenchmarkTail(b *testing.B) {
	const size = 300 << 10
	script := fmt.Sprintf("stty raw -echo; head -c %d /dev/zero | tr '\\0' a; printf LAST-BYTES", size)
	argv := []string{"sh", "-c", script}
	l := startLocal(b, hub.Options{}, func(string) []string { return argv })
	var lostDirect, lostWS int
	for i := 0; i < b.N; i++ {
		m, cmd, err := ptyutil.Command(80, 24, argv[0], argv[1:]...)
		if err != nil {
			b.Fatal(err)
		}
		var out []byte
		buf := make([]byte, 64<<10)
		for {
			k, err := m.Read(buf)
			out = append(out, buf[:k]...)
			if err != nil {
				break
			}
		}
		if len(out) != size+10 || !bytes.HasSuffix(out, []byte("LAST-BYTES")) {
			lostDirect++
		}
		m.Close()
		cmd.Wait()

		c := l.dial(b)
		c.create(b, "x")
		var tail []byte
		for {
			d, exit := c.read(b, true)
			if exit {
				break
			}
			tail = append(tail[max(0, len(tail)-16):], d...)
		}
		if c.got != size+10 || !bytes.HasSuffix(tail, []byte("LAST-BYTES")) {
			lostWS++
		}
		c.ws.Close()
	}
	b.ReportMetric(float64(lostDirect), "direct-lost")
	b.ReportMetric(float64(lostWS), "websocket-lost")
	b.ReportMetric(float64(b.N), "runs")
}
