package rpc

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestWorkersKeptBounded: serving goroutines are kept between calls, at
// most MaxIdleWorkers of them however many calls ran at once, and none
// outlives Serve.
func TestWorkersKeptBounded(t *testing.T) {
	before := runtime.NumGoroutine()
	ts := startServer(t, func(s *Server) { s.MaxConns = 4 * MaxIdleWorkers })
	cl := ts.client()
	ctx := context.Background()
	for range 20 {
		if _, err := cl.Call(ctx, echoReq{Text: "one"}, nil, &echoRep{}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 3 * MaxIdleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if _, err := cl.Call(ctx, echoReq{Text: "many"}, nil, &echoRep{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Serve's goroutine and the listener's AfterFunc besides the workers.
	waitGoroutines(t, func(n int) bool { return n <= before+2+MaxIdleWorkers }, "idle workers above the bound")
	ts.stop()
	waitGoroutines(t, func(n int) bool { return n <= before }, "goroutines left after Serve returned")
}

func waitGoroutines(t *testing.T, ok func(int) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(runtime.NumGoroutine()) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%s: %d goroutines\n%s", what, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
