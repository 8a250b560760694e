package hostile

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/rpc"
)

// flood opens 2,000 connections at once and holds them, silent. The
// server must take exactly its cap of them, answer every other one with
// the busy line at once, and serve a good call once they are closed.
func flood(t *testing.T, tg *target) {
	const n = 2000
	conns := make([]*Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for range n {
		c, err := Dial(tg.sock)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	elapsed := time.Since(start)

	// The server accepts in order, so once the last connection has its
	// answer every earlier one has been taken or turned away.
	last := conns[n-1]
	last.Timeout(tg.timeout + 10*time.Second)
	if r := last.ReadAll().Parse(); r.Kind != Busy {
		t.Fatalf("connection %d of %d: %v, want busy", n, n, r)
	}
	busy, held, cut := 1, 0, 0
	for i, c := range conns[:n-1] {
		p := []unix.PollFd{{Fd: int32(c.FD()), Events: unix.POLLIN}}
		if _, err := unix.Poll(p, 0); err != nil {
			t.Fatal(err)
		}
		if p[0].Revents == 0 {
			held++
			continue
		}
		switch r := c.ReadAll().Parse(); r.Kind {
		case Busy:
			busy++
		case Closed: // taken, then cut off at the server's deadline
			cut++
		default:
			t.Fatalf("connection %d: %v, want busy, or nothing", i, r)
		}
	}
	t.Logf("%d connections opened in %v: %d held, %d busy, %d cut at the deadline", n, elapsed, held, busy, cut)
	if elapsed < tg.timeout {
		// No deadline passed while we opened them: the split is exact.
		if held != tg.maxConns || busy != n-tg.maxConns || cut != 0 {
			t.Fatalf("held %d, busy %d, cut %d; want exactly %d held and %d busy", held, busy, cut, tg.maxConns, n-tg.maxConns)
		}
	} else if held+cut < tg.maxConns || held > tg.maxConns {
		t.Fatalf("held %d, cut %d: the cap is %d", held, cut, tg.maxConns)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// The slots free as the server sees the closes.
	var r Reply
	var a Answer
	settle(func() bool {
		r, a = tg.exchange(t, tg.goodCall()) // closes the fds it got
		return r.Kind != Busy
	})
	if err := tg.checkGood(r, a); err != nil {
		t.Fatalf("good call after the flood: %v", err)
	}
}

func TestFloodInProcess(t *testing.T) {
	// A long deadline, so the held connections stay held while we count.
	flood(t, inProcess(t, func(s *rpc.Server) { s.Timeout = 30 * time.Second }))
}

func TestFloodHelpers(t *testing.T) {
	for _, tg := range helperTargetList(t) {
		t.Run(tg.name, func(t *testing.T) { flood(t, tg) })
	}
}

// badCalls are quick attacks for the growth test, each with the kind of
// answer it must get.
func badCalls(tg *target, fds []int) []struct {
	req  []byte
	fds  []int
	want Kind
} {
	lines := tg.client.Lines()
	f := Frame(tg.good)
	type bc = struct {
		req  []byte
		fds  []int
		want Kind
	}
	return []bc{
		{Cat(tg.other.Lines(), f), nil, Closed},
		{Cat([]byte(tg.client.Intent+"\n"+strings.ToUpper(tg.client.BuildID)+"\n"), f), nil, Closed},
		{Cat(tg.server.Lines(), f), nil, Closed},
		{bytes.Repeat([]byte("i"), 4096), nil, Closed},
		{Cat(lines, Len(uint32(tg.maxFrame+1))), nil, ErrorKind},
		{Cat(lines, Len(0xffffffff)), nil, ErrorKind},
		{Cat(lines, f[:len(f)/2]), nil, HelloOnly},
		{Cat(lines, f, f), nil, ErrorKind},
		{Cat(lines, Frame([]byte("GET / HTTP/1.1\r\n\r\n"))), nil, ErrorKind},
		{Cat(lines, Frame(mp([]int{1, 2, 3}))), nil, ErrorKind},
		{Cat(lines, Frame(hostileClaim)), nil, ErrorKind},
		{Cat(lines, Len(0)), nil, ErrorKind},
		{Cat(lines, f), fds, ErrorKind},
	}
}

// usage is what a server process holds.
type usage struct {
	fds, threads, goroutines int
	mem                      uint64 // heap in use after GC (this process) or RSS (a helper)
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, %d threads, %d goroutines, %d KiB", u.fds, u.threads, u.goroutines, u.mem>>10)
}

func measure(t *testing.T, pid string) usage {
	t.Helper()
	var u usage
	var err error
	if u.fds, err = CountFDs(pid); err != nil {
		t.Fatal(err)
	}
	if pid == "self" {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		u.mem, u.goroutines = ms.HeapInuse, runtime.NumGoroutine()
	}
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.ParseUint(fs[0], 10, 64)
		switch k {
		case "Threads":
			u.threads = int(n)
		case "VmRSS":
			if pid != "self" {
				u.mem = n << 10
			}
		}
	}
	return u
}

// noGrowth makes 10,000 bad calls and checks that the server holds no
// more fds, goroutines, threads or memory than before (generous bounds for
// memory, which a garbage collector never returns exactly).
func noGrowth(t *testing.T, tg *target, calls int) {
	fds := pipes(t, 200)
	bad := badCalls(tg, fds)
	run := func(n int) {
		const workers = 4
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					b := bad[i%len(bad)]
					c, err := Dial(tg.sock)
					if err != nil {
						errs <- err
						return
					}
					if b.fds != nil {
						c.WriteFDs(b.req, b.fds)
					} else {
						c.Write(b.req)
					}
					c.CloseWrite()
					a := c.ReadAll()
					c.Close()
					a.CloseFDs()
					if r := a.Parse(); r.Kind != b.want && r.Kind != Busy {
						errs <- fmt.Errorf("bad call %d: %v, want %v", i%len(bad), r, b.want)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	run(200) // warm up pools and caches
	before := measure(t, tg.pid)
	run(calls)
	var after usage
	ok := settle(func() bool {
		after = measure(t, tg.pid)
		// The server keeps up to rpc.MaxIdleWorkers serving goroutines
		// parked between calls; a leak would be thousands.
		return after.fds <= before.fds && after.goroutines <= before.goroutines+rpc.MaxIdleWorkers
	})
	t.Logf("%d bad calls: before %v; after %v", calls, before, after)
	if !ok {
		t.Fatalf("fds or goroutines grew: before %v, after %v", before, after)
	}
	if after.threads > before.threads+8 {
		t.Fatalf("threads grew: before %v, after %v", before, after)
	}
	limit := uint64(16 << 20)
	if tg.pid != "self" {
		limit = 32 << 20
	}
	if after.mem > before.mem+limit {
		t.Fatalf("memory grew by %d KiB: before %v, after %v", (after.mem-before.mem)>>10, before, after)
	}
	tg.mustServeGood(t)
}

func TestNoGrowthInProcess(t *testing.T) {
	noGrowth(t, inProcess(t, nil), 10000)
}

func TestNoGrowthHelpers(t *testing.T) {
	for _, tg := range helperTargetList(t) {
		t.Run(tg.name, func(t *testing.T) { noGrowth(t, tg, 10000) })
	}
}
