package rpc

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer is the baseline: the same kernel object and Go net package,
// but no handshake, no credentials, no framing, no msgpack. Accept, one
// read, one write, close.
func rawServer(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "raw.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	reply := []byte("0123456789abcdef0123456789")
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 512)
				c.Read(buf)
				c.Write(reply)
				c.Close()
			}()
		}
	}()
	return path
}

func rawCall(path string, req []byte, buf []byte) error {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		return err
	}
	for {
		_, err := c.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func p50(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

func p99(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)*99/100]
}

// BenchmarkOneShot interleaves a raw connect+write+read+close round trip
// and a full rpc call (handshake both ways, credentials, frames, msgpack,
// call log) on the same machine in the same run, and reports both p50s and
// their ratio.
func BenchmarkOneShot(b *testing.B) {
	ts := startServer(b, nil)
	rawPath := rawServer(b)
	cl := ts.client()
	req := echoReq{Text: "ping"}
	rawReq := append(hello(tClient), frame(mp(req))...)
	buf := make([]byte, 512)
	ctx := context.Background()
	for i := 0; i < 200; i++ { // warm up both paths
		rawCall(rawPath, rawReq, buf)
		cl.Call(ctx, req, nil, nil)
	}
	raw := make([]time.Duration, 0, b.N)
	rpcd := make([]time.Duration, 0, b.N)
	var rep echoRep
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := rawCall(rawPath, rawReq, buf); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := cl.Call(ctx, req, nil, &rep); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		raw = append(raw, t1.Sub(t0))
		rpcd = append(rpcd, t2.Sub(t1))
	}
	b.StopTimer()
	rp, cp := p50(raw), p50(rpcd)
	b.ReportMetric(float64(rp.Nanoseconds()), "raw-p50-ns")
	b.ReportMetric(float64(cp.Nanoseconds()), "rpc-p50-ns")
	b.ReportMetric(float64(p99(raw).Nanoseconds()), "raw-p99-ns")
	b.ReportMetric(float64(p99(rpcd).Nanoseconds()), "rpc-p99-ns")
	b.ReportMetric(float64(cp)/float64(rp), "p50-ratio")
}

// BenchmarkParallel8 measures throughput with 8 concurrent clients, first
// raw then rpc, in the same run, and reports calls/s for both and the ratio
// of raw to rpc throughput (1.0 = as fast as raw; 1.3 = 30% fewer calls/s).
func BenchmarkParallel8(b *testing.B) {
	ts := startServer(b, nil)
	rawPath := rawServer(b)
	cl := ts.client()
	req := echoReq{Text: "ping"}
	rawReq := append(hello(tClient), frame(mp(req))...)
	ctx := context.Background()
	const clients = 8
	run := func(n int, one func(buf []byte) error) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for g := 0; g < clients; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 512)
				for next.Add(1) <= int64(n) {
					if err := one(buf); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	rawOne := func(buf []byte) error { return rawCall(rawPath, rawReq, buf) }
	rpcOne := func(buf []byte) error { _, err := cl.Call(ctx, req, nil, nil); return err }
	run(500, rawOne)
	run(500, rpcOne)
	b.ResetTimer()
	n := b.N
	if n < 2000 {
		n = 2000
	}
	// Alternate halves so drift in machine load hits both alike.
	var rawT, rpcT time.Duration
	for half := 0; half < 2; half++ {
		rawT += run(n/2, rawOne)
		rpcT += run(n/2, rpcOne)
	}
	b.StopTimer()
	rawRate := float64(n) / rawT.Seconds()
	rpcRate := float64(n) / rpcT.Seconds()
	b.ReportMetric(rawRate, "raw-calls/s")
	b.ReportMetric(rpcRate, "rpc-calls/s")
	b.ReportMetric(rawRate/rpcRate, "slowdown-ratio")
}
