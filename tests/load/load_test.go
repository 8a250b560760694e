// Package load puts the running suite (the real binaries under the real
// `sluice run`, package suiterun) under concurrent load and reports
// latency and error figures, each beside a baseline measured in the same
// run:
//
//   - 1,000 concurrent one-shot calls against the long-running helper
//     (ptystore: pty-list and pty-get with its fd), against 1,000
//     concurrent raw UNIX socket round trips to an echo server;
//   - 200 parallel Accept=yes spawns through the runner (auth
//     login-begin), against 200 parallel bare fork+exec of the same binary;
//   - terminal sessions through the frontend, each printing sequence
//     numbers continuously, every byte checked at every viewer, against
//     the same programs read straight from their ptys.
//
// `go test` runs the short versions (the call bursts once, 20 sessions for
// 3 s). SLUICE_LOAD_FULL=1 (set by `make bench`) makes the session test
// 200 sessions for 60 s. The benchmarks report the figures as metrics,
// ratios ending in "ratio" for bench/REPORT.md.
package load

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/suiterun"
)

var env struct {
	s   *suiterun.Suite
	key grant.Key
}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		return 1, errors.New("needs root: the runner switches users and the shells run as root (CI runs as root)")
	}
	// 1,000 concurrent calls and hundreds of WebSockets, each an fd here.
	if err := suiterun.RaiseNoFile(); err != nil {
		return 1, err
	}
	dir, err := os.MkdirTemp("", "sluice-load-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin, err := suiterun.Binaries(dir)
	if err != nil {
		return 1, err
	}
	s, err := suiterun.Start(suiterun.Options{Dir: filepath.Join(dir, "suite"), Bin: bin, FreshRootHome: true})
	if err != nil {
		return 1, err
	}
	env.s = s
	if env.key, err = grant.LoadKey(filepath.Join(s.StateDir, "credentials", "grant.key")); err != nil {
		s.Stop()
		return 1, err
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- runner log (last 20000 bytes) ---\n%s", tailString(s.Log.String(), 20000))
	}
	if err := s.Stop(); err != nil {
		return 1, err
	}
	return code, nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// signed is a grant for user made with the suite's grant key, as auth
// makes one on sign-in; the call tests need grants, not ceremonies.
func signed(tb testing.TB, user string) msg.Grant {
	tb.Helper()
	g, err := grant.Sign(env.key, user, time.Now(), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// Stats are the figures of one burst.
type Stats struct {
	N             int
	P50, P99, Max time.Duration
	Errors        int            // calls that failed, busy ones included
	Busy          int            // of which: turned away at the connection cap
	ByKind        map[string]int // error text (first line) -> count
	Wall          time.Duration
}

func (s Stats) String() string {
	var kinds []string
	for k, n := range s.ByKind {
		kinds = append(kinds, fmt.Sprintf("%dx %s", n, k))
	}
	slices.Sort(kinds)
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v errors=%d (busy %d) wall=%v %s",
		s.N, s.P50.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.Max.Round(time.Microsecond),
		s.Errors, s.Busy, s.Wall.Round(time.Millisecond), strings.Join(kinds, "; "))
}

// burst runs n calls of fn at once (all released together) and returns
// their latency figures.
func burst(n int, fn func(i int) error) Stats {
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	start := make(chan struct{})
	done := make(chan struct{}, n)
	for i := range n {
		go func() {
			<-start
			t0 := time.Now()
			errs[i] = fn(i)
			lat[i] = time.Since(t0)
			done <- struct{}{}
		}()
	}
	t0 := time.Now()
	close(start)
	for range n {
		<-done
	}
	st := Stats{N: n, Wall: time.Since(t0), ByKind: map[string]int{}}
	slices.Sort(lat)
	st.P50, st.P99, st.Max = lat[n/2], lat[(n*99)/100], lat[n-1]
	for _, err := range errs {
		if err == nil {
			continue
		}
		st.Errors++
		if errors.Is(err, rpc.ErrBusy) {
			st.Busy++
		}
		st.ByKind[kind(err)]++
	}
	return st
}

// kind shortens an error to what tells errors apart: socket paths and
// pids vary.
func kind(err error) string {
	switch {
	case errors.Is(err, rpc.ErrBusy):
		return "busy"
	case errors.Is(err, rpc.ErrTimeout):
		return "timeout"
	case errors.Is(err, rpc.ErrHandshake):
		return "handshake"
	case errors.Is(err, rpc.ErrTruncated):
		return "truncated"
	}
	if c := rpc.CodeOf(err); c != "" {
		return "remote " + c
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func ctx() context.Context { return context.Background() }
