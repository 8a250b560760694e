package record

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"sluice/internal/pty"
	"sluice/internal/termsock"
)

// Recording on against off, measured in the same run (make bench, issue
// 14): "off" reads the shell's pty master directly, as ptystore and the
// frontend do without a record rule; "on" puts the recorder between it
// and the session socket and reads (and types into, framed) the socket's
// other end, as the frontend does, with the recording written to a file. The two alternate, so a burst of load on the machine
// falls on both alike. The frontend's WebSocket path comes on top of
// either, unchanged, so the ratio of the whole page path is closer to 1
// than this one.

const benchCatSize = 100 << 20

// shellOn starts argv on a new pty and returns its master.
func shellOn(b *testing.B, argv ...string) (*os.File, *exec.Cmd) {
	m, s, err := pty.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return m, cmd
}

// recorded puts a recorder on inner and returns the session socket the
// frontend would get; done is closed when the recorder has ended.
func recorded(b *testing.B, inner *os.File, input bool) (*os.File, chan struct{}) {
	mine, theirs, err := termsock.Pair()
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(b.TempDir(), "bench.cast"))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	w, err := NewWriter(f, bytes.Repeat([]byte{1}, KeySize), Header{Version: 2, Width: 80, Height: 24}, start, 0)
	if err != nil {
		b.Fatal(err)
	}
	sp := &Splice{Inner: inner, Outer: mine, W: w, Input: input}
	if err := sp.Prepare(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sp.Run(context.Background()); f.Close(); close(done) }()
	return theirs, done
}

func bigFile(b *testing.B) string {
	p := filepath.Join(b.TempDir(), "100MB")
	line := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), 2)
	line = append(line, '\n')
	if err := os.WriteFile(p, bytes.Repeat(line, benchCatSize/len(line)+1)[:benchCatSize], 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

func readAll(m *os.File) (int64, time.Duration) {
	buf := make([]byte, 64<<10)
	var n int64
	start := time.Now()
	for {
		k, err := m.Read(buf)
		n += int64(k)
		if err != nil {
			return n, time.Since(start)
		}
	}
}

// BenchmarkRecordCat100MB: `cat` of 100 MB, recorded against not.
func BenchmarkRecordCat100MB(b *testing.B) {
	const rounds = 3
	file := bigFile(b)
	argv := []string{"sh", "-c", "stty raw -echo; exec cat " + file}
	var off, on, offCPU, onCPU time.Duration
	for i := 0; i < b.N; i++ {
		for range rounds {
			c := cpuTime()
			m, cmd := shellOn(b, argv...)
			n, d := readAll(m)
			m.Close()
			cmd.Wait()
			if n != benchCatSize {
				b.Fatalf("direct read %d bytes", n)
			}
			off += d
			offCPU += cpuTime() - c

			c = cpuTime()
			inner, cmd := shellOn(b, argv...)
			om, done := recorded(b, inner, false)
			n, d = readAll(om)
			om.Close()
			<-done
			cmd.Wait()
			if n != benchCatSize {
				b.Fatalf("recorded read %d bytes", n)
			}
			on += d
			onCPU += cpuTime() - c
		}
	}
	per := func(d time.Duration) float64 { return d.Seconds() / rounds / float64(b.N) }
	// CPU (this process and the shells it waited for): what the
	// throughput ratio comes down to when no core is free.
	b.ReportMetric(per(offCPU), "off-cpu-s/100MB")
	b.ReportMetric(per(onCPU), "recorded-cpu-s/100MB")
	mbps := func(d time.Duration) float64 {
		return float64(benchCatSize) * rounds * float64(b.N) / d.Seconds() / 1e6
	}
	b.ReportMetric(mbps(off), "off-MB/s")
	b.ReportMetric(mbps(on), "recorded-MB/s")
	b.ReportMetric(off.Seconds()/on.Seconds(), "record-tput-ratio")
}

// cpuTime is the user and system time of this process and of its waited-for
// children so far.
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	var t time.Duration
	for _, tv := range []syscall.Timeval{self.Utime, self.Stime, kids.Utime, kids.Stime} {
		t += time.Duration(tv.Nano())
	}
	return t
}

// BenchmarkRecordEcho: one keystroke to cat in raw mode and back, recorded
// (with input, the costlier case) against not; the p50 difference is what
// recording adds to a keystroke.
func BenchmarkRecordEcho(b *testing.B) {
	const blocks, rounds = 10, 500
	argv := []string{"sh", "-c", "stty raw -echo; printf R; exec cat"}
	// Three in turn, block by block: off (the pty read directly), the
	// default "record" (output and sizes: the target), and "record input"
	// (each key also an i event written and sealed before it is passed on).
	var offAll, onAll, inAll []time.Duration
	key, one := []byte("k"), make([]byte, 1)
	echo := func(m *os.File, into *[]time.Duration, frame bool) {
		for range rounds {
			t := time.Now()
			if frame {
				m.Write(termsock.AppendInput(nil, key)) // as the frontend does
			} else {
				m.Write(key)
			}
			if _, err := io.ReadFull(m, one); err != nil {
				b.Fatal(err)
			}
			*into = append(*into, time.Since(t))
		}
	}
	for i := 0; i < b.N; i++ {
		m, cmd := shellOn(b, argv...)
		io.ReadFull(m, one)
		inner, cmd2 := shellOn(b, argv...)
		om, done := recorded(b, inner, false)
		io.ReadFull(om, one)
		inner3, cmd3 := shellOn(b, argv...)
		im, done3 := recorded(b, inner3, true)
		io.ReadFull(im, one)
		for range blocks {
			echo(m, &offAll, false)
			echo(om, &onAll, true)
			echo(im, &inAll, true)
		}
		m.Close()
		om.Close()
		im.Close()
		<-done
		<-done3
		for _, c := range []*exec.Cmd{cmd, cmd2, cmd3} {
			c.Process.Kill()
			c.Wait()
		}
	}
	p50 := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	off, on, in := p50(offAll), p50(onAll), p50(inAll)
	b.ReportMetric(float64(off)/1e3, "off-p50-us")
	b.ReportMetric(float64(on)/1e3, "recorded-p50-us")
	b.ReportMetric(float64(on-off)/1e3, "record-added-p50-us")
	b.ReportMetric(float64(in)/1e3, "recorded-input-p50-us")
	b.ReportMetric(float64(in-off)/1e3, "record-input-added-p50-us")
}
