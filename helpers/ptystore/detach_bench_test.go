package ptystore

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"sluice/msg"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkViewersReportRatio measures what reporting the attached
// sessions every msg.PolicyDetachPollMs costs: one pty-viewers call over
// a real socket (connect, handshake both ways, SCM_CREDENTIALS, the
// answer naming the policy-detached ones), with 1 session and with a full
// report of msg.MaxPtyViewers, timed by the wall clock and by this
// process's CPU (client and server both run here). duty-ratio is the CPU
// of a full report over the interval: the share of one core the poll
// takes on a frontend streaming that many sessions.
func BenchmarkViewersReportRatio(b *testing.B) {
	h := newHarness(b, Config{})
	h.put(startShell(b), "s0", "alice")
	h.store.setDetached("s0", true)
	full := []string{"s0"}
	for i := 1; i < msg.MaxPtyViewers; i++ {
		full = append(full, fmt.Sprintf("session-%04d", i))
	}
	report := func(ids []string) {
		var rep msg.PtyViewersReply
		if _, code := call(b, h.web, msg.OpPtyViewers, msg.PtyViewers{Attached: ids}, nil, &rep); code != "" || len(rep.Detached) != 1 {
			b.Fatalf("pty-viewers: %q %+v", code, rep)
		}
	}
	var wall1, wallN, cpu1, cpuN time.Duration
	for b.Loop() {
		t0, c0 := time.Now(), cpuTime()
		report(full[:1])
		t1, c1 := time.Now(), cpuTime()
		report(full)
		t2, c2 := time.Now(), cpuTime()
		wall1 += t1.Sub(t0)
		wallN += t2.Sub(t1)
		cpu1 += c1 - c0
		cpuN += c2 - c1
	}
	n := float64(b.N)
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / n }
	b.ReportMetric(us(wall1), "call1-us")
	b.ReportMetric(us(wallN), "call1024-us")
	b.ReportMetric(us(cpu1), "cpu1-us")
	b.ReportMetric(us(cpuN), "cpu1024-us")
	b.ReportMetric(float64(cpuN)/n/float64(msg.PolicyDetachPollMs*time.Millisecond), "duty-ratio")
}
