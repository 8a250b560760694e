package runner

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"sluice/runner/spawn"
)

// The per-connection path against its floor. "call" is what a client of
// an Accept=yes helper waits for: connect, the runner accepts and spawns
// the helper (LISTEN_PID and all), the helper starts, does the handshake
// and the call, and replies. "forkexec" is a bare fork+exec+wait of the
// same static binary told to exit at once. Target: call <= 1.2 x forkexec.

func benchHarness(b *testing.B, env string) *harness {
	return start(b, `[{"name": "echo", "exec": ["testsvc", "--quiet"], "accept": true, "env": {`+env+`}}]`)
}

// call makes one call and then, off the clock, waits for the instance to
// be reaped: otherwise each call would also pay for the previous
// instance's exit running alongside it, which the bare fork+exec+wait
// does not.
func (h *harness) benchCall(b *testing.B) time.Duration {
	t0 := time.Now()
	var pong string
	if _, err := h.client("echo").Call(context.Background(), request{Op: "ping"}, nil, &pong); err != nil || pong != "pong" {
		b.Fatalf("ping: %q, %v", pong, err)
	}
	d := time.Since(t0)
	u := h.r.units["echo"]
	for {
		u.instMu.Lock()
		n := len(u.instances)
		u.instMu.Unlock()
		if n == 0 {
			return d
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func forkExecWait(b *testing.B) {
	p, err := spawn.Start(&spawn.Attr{Path: filepath.Join(binDir, "testsvc"), Args: []string{"testsvc", "exit"}, Umask: -1})
	if err != nil {
		b.Fatal(err)
	}
	if ws := p.Wait(); ws.ExitStatus() != 0 {
		b.Fatal(spawn.Describe(ws))
	}
}

func BenchmarkAcceptSpawn(b *testing.B) {
	h := benchHarness(b, "")
	b.Run("call", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			total += h.benchCall(b)
		}
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "latency-ns/op")
	})
	b.Run("forkexec", func(b *testing.B) {
		for b.Loop() {
			forkExecWait(b)
		}
	})
}

// BenchmarkAcceptSpawnRatio interleaves the two, so both see the same
// machine state, and reports call/forkexec as "ratio".
func BenchmarkAcceptSpawnRatio(b *testing.B) {
	h := benchHarness(b, "")
	var call, fe time.Duration
	for b.Loop() {
		call += h.benchCall(b)
		t1 := time.Now()
		forkExecWait(b)
		fe += time.Since(t1)
	}
	b.ReportMetric(float64(call.Nanoseconds())/float64(b.N), "call-ns/op")
	b.ReportMetric(float64(fe.Nanoseconds())/float64(b.N), "forkexec-ns/op")
	b.ReportMetric(float64(call)/float64(fe), "ratio")
}
