package frontend

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
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

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"sluice/frontend/hub"
	"sluice/frontend/internal/ptyutil"
)

// The figures of issue 5, each measured beside its baseline in the same
// run and reported as a ratio to it (units ending in "ratio") besides the
// absolute figures; bench/report checks both against the targets. Run
// with: go test -run '^$' -bench . -benchtime 1x ./frontend/

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
// the same pty directly. Each iteration does both three times, alternating, so
// that a burst of load on the machine falls on both alike.
func BenchmarkCat100MB(b *testing.B) {
	const rounds = 3
	file := bigFile(b)
	l := startLocal(b, hub.Options{}, func(string) []string {
		return []string{"sh", "-c", "stty raw -echo; exec cat " + file}
	})
	b.SetBytes(catSize * rounds)
	var direct, ws time.Duration
	for i := 0; i < b.N; i++ {
		for range rounds {
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
	}
	mbps := func(d time.Duration) float64 { return float64(catSize) * rounds * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(direct), "direct-MB/s")
	b.ReportMetric(mbps(ws), "websocket-MB/s")
	b.ReportMetric(direct.Seconds()/ws.Seconds(), "tput-ratio")
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkEcho: one keystroke to a program that echoes it (cat in raw
// mode, as readline does) and back, through the WebSocket, against the same
// round trip on the pty directly. The two alternate in blocks, so that a
// burst of load on the machine falls on both alike.
func BenchmarkEcho(b *testing.B) {
	const blocks, rounds = 10, 500
	argv := []string{"sh", "-c", "stty raw -echo; printf R; exec cat"}
	l := startLocal(b, hub.Options{}, func(string) []string { return argv })
	var directAll, wsAll []time.Duration
	key := []byte("k")
	for i := 0; i < b.N; i++ {
		m, cmd, err := ptyutil.Command(80, 24, argv[0], argv[1:]...)
		if err != nil {
			b.Fatal(err)
		}
		one := make([]byte, 1)
		io.ReadFull(m, one) // R: stty has run
		c := l.dial(b)
		c.create(b, "x")
		c.until(b, "R")
		for range blocks {
			for range rounds {
				t := time.Now()
				m.Write(key)
				if _, err := io.ReadFull(m, one); err != nil {
					b.Fatal(err)
				}
				directAll = append(directAll, time.Since(t))
			}
			for range rounds {
				t := time.Now()
				c.ws.WriteMessage(websocket.BinaryMessage, key)
				if d, _ := c.read(b, false); len(d) != 1 {
					b.Fatalf("echo of %d bytes", len(d))
				}
				wsAll = append(wsAll, time.Since(t))
				c.ack(b)
			}
		}
		m.Close()
		cmd.Process.Kill()
		cmd.Wait()
		c.ws.Close()
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	d50, d99 := percentile(directAll, .5), percentile(directAll, .99)
	w50, w99 := percentile(wsAll, .5), percentile(wsAll, .99)
	b.ReportMetric(us(d50), "direct-p50-us")
	b.ReportMetric(us(d99), "direct-p99-us")
	b.ReportMetric(us(w50), "echo-p50-us")
	b.ReportMetric(us(w99), "echo-p99-us")
	b.ReportMetric(float64(w50)/float64(d50), "echo-p50-ratio")
	b.ReportMetric(float64(w99)/float64(d99), "echo-p99-ratio")
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
	ms := func(d time.Duration) float64 { return d.Seconds() * 1e3 / float64(b.N) }
	b.ReportMetric(ms(direct), "direct-ctrlc-ms")
	b.ReportMetric(ms(ws), "ctrlc-ms")
	b.ReportMetric(ws.Seconds()/direct.Seconds(), "ctrlc-ratio")
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
// The baseline is the textbook relay (bareRelay) measured the same way in
// the same run.
func BenchmarkIdleSessions(b *testing.B) {
	const sessions = 200
	argv := []string{"sh", "-c", "printf 'user@host:~$ '; exec cat"}
	l := startLocal(b, hub.Options{}, func(string) []string { return argv })
	bare := startBare(b)
	var ours, base float64
	for i := 0; i < b.N; i++ {
		// The shells are made before measuring: in the suite the shell
		// helper starts them, not the frontend.
		l.be.ready = shells(b, l.be, sessions)
		ours += idleKiB(b, sessions, "sluice", l.ws, l.origin)
		if n := l.srv.Hub().Len(); n < sessions {
			b.Fatalf("%d sessions in the hub", n)
		}
		bare.ptys = shells(b, l.be, sessions)
		base += idleKiB(b, sessions, "bare", bare.ws, l.origin)
	}
	b.ReportMetric(ours/float64(b.N), "idle-KiB/session")
	b.ReportMetric(base/float64(b.N), "bare-KiB/session")
	b.ReportMetric(ours/base, "idle-ratio")
}

// shells starts n shells on ptys and hands back their masters.
func shells(b *testing.B, be *localBackend, n int) chan *os.File {
	ready := make(chan *os.File, n)
	for range n {
		m, cmd, err := be.spawn("x")
		if err != nil {
			b.Fatal(err)
		}
		go cmd.Wait()
		ready <- m
	}
	return ready
}

// idleKiB has a child process open n sessions of kind ("sluice" or
// "bare") and wait for each one's prompt, and returns the growth of this
// process's resident memory per session, in KiB. The sessions stay open
// until the child is gone, when this returns.
func idleKiB(b *testing.B, n int, kind, url, origin string) float64 {
	before := rss(b)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestIdleClients$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SLUICE_IDLE_CLIENTS="+fmt.Sprint(n), "SLUICE_IDLE_KIND="+kind,
		"SLUICE_IDLE_WS="+url, "SLUICE_IDLE_ORIGIN="+origin)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	// The child prints "ready" once every session shows its prompt.
	buf := make([]byte, 0, 64)
	one := make([]byte, 1)
	for !bytes.Contains(buf, []byte("ready")) {
		if _, err := stdout.Read(one); err != nil {
			b.Fatalf("client process: %v (%q)", err, buf)
		}
		buf = append(buf, one[0])
	}
	return float64(rss(b)-before) / float64(n) / 1024
}

// TestIdleClients is the client half of BenchmarkIdleSessions, run in a
// child process; it does nothing otherwise.
func TestIdleClients(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SLUICE_IDLE_CLIENTS"))
	if n == 0 {
		return
	}
	l := &local{ws: os.Getenv("SLUICE_IDLE_WS"), origin: os.Getenv("SLUICE_IDLE_ORIGIN")}
	bare := os.Getenv("SLUICE_IDLE_KIND") == "bare"
	var cs []*wsClient
	for i := 0; i < n; i++ {
		var c *wsClient
		if bare {
			ws, _, err := websocket.DefaultDialer.Dial(l.ws, nil)
			if err != nil {
				t.Fatal(err)
			}
			c = &wsClient{ws: ws}
		} else {
			c = l.dial(t)
			c.create(t, "x")
		}
		c.until(t, "$ ")
		cs = append(cs, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range cs {
		c.ws.Close()
	}
}

// bareRelay is the textbook WebSocket terminal relay: gorilla's default
// upgrader, the handler's goroutine copying client frames to the pty, and
// a goroutine copying the pty to the client through a 32 KiB buffer, as
// io.Copy would. Its pty reads park in the runtime poller like the hub's.
type bareRelay struct {
	ptys chan *os.File
	ws   string
}

func startBare(b *testing.B) *bareRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	br := &bareRelay{ws: "ws://" + ln.Addr().String() + "/"}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		m, err := nonblocking(<-br.ptys)
		if err != nil {
			return
		}
		defer m.Close()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := m.Read(buf)
				if err != nil || ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					ws.Close()
					return
				}
			}
		}()
		for {
			_, p, err := ws.ReadMessage()
			if err != nil {
				return
			}
			m.Write(p)
		}
	})}
	go hs.Serve(ln)
	b.Cleanup(func() { hs.Close() })
	return br
}

// nonblocking is f as a file the runtime poller waits on.
func nonblocking(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// lost is how many bytes of the tail did not arrive: the shortfall, or
// all of them when the last bytes are not the end marker.
func lost(want, got int64, tail []byte) int64 {
	if got == want && bytes.HasSuffix(tail, []byte("LAST-BYTES")) {
		return 0
	}
	return max(want-got, int64(len("LAST-BYTES")))
}

// BenchmarkTail: a shell prints and exits at once; the client must get
// every byte up to the last, then the end. Reports the bytes lost (must be
// 0) beside the same on the pty read directly, and the bytes the
// WebSocket delivered as a ratio to the direct read's.
func BenchmarkTail(b *testing.B) {
	const size = 300 << 10
	script := fmt.Sprintf("stty raw -echo; head -c %d /dev/zero | tr '\\0' a; printf LAST-BYTES", size)
	argv := []string{"sh", "-c", script}
	l := startLocal(b, hub.Options{}, func(string) []string { return argv })
	const want = int64(size + len("LAST-BYTES"))
	var lostDirect, lostWS, gotDirect, gotWS int64
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
		gotDirect += int64(len(out))
		lostDirect += lost(want, int64(len(out)), out)
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
		gotWS += c.got
		lostWS += lost(want, c.got, tail)
		c.ws.Close()
	}
	b.ReportMetric(float64(lostDirect), "direct-lost-bytes")
	b.ReportMetric(float64(lostWS), "tail-lost-bytes")
	b.ReportMetric(float64(gotWS)/float64(gotDirect), "tail-ratio")
}
