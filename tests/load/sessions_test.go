package load

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/internal/pty"
	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

// Session load sizes: short for `go test`, full with SLUICE_LOAD_FULL=1.
const (
	shortSessions, shortFor = 20, 3 * time.Second
	fullSessions, fullFor   = 200, 60 * time.Second
	viewersPerSession       = 2 // the creator and one more page of the same user
	sessionsPerUser         = 5 // one passkey signs in one page at a time, so spread pages over users
	setupParallel           = 4 // logins at once while setting up: auth serializes on its database
)

func sessionLoad() (n int, d time.Duration) {
	if os.Getenv("SLUICE_LOAD_FULL") == "1" {
		return fullSessions, fullFor
	}
	if v, err := strconv.Atoi(os.Getenv("SLUICE_LOAD_N")); err == nil {
		return v, shortFor
	}
	return shortSessions, shortFor
}

// command prints 1, 2, 3, ... one per line for d, between two markers.
// The quotes keep the echoed command line from matching the markers.
func command(d time.Duration) string {
	return fmt.Sprintf("echo ST''ART; timeout %.0f stdbuf -o 64K seq 1 999999999999; echo EN''D", d.Seconds())
}

// seqChecker checks a stream that must be "START\r\n1\r\n2\r\n...N\r\n"
// then a prefix of N+1 and "END\r\n": every byte between the markers is
// accounted for, nothing lost, doubled, reordered or changed.
type seqChecker struct {
	started bool
	pre     []byte // before START: only searched for the marker
	line    []byte
	next    int64
	want    []byte
	Lines   int64
	Bytes   int64
	Done    bool
	Err     error
}

func (c *seqChecker) feed(p []byte) {
	for len(p) > 0 && !c.Done && c.Err == nil {
		if !c.started {
			c.pre = append(c.pre, p...)
			i := indexOf(c.pre, "START\r\n")
			if i < 0 {
				if len(c.pre) > 64<<10 {
					c.pre = c.pre[len(c.pre)-16:]
				}
				return
			}
			p = c.pre[i+len("START\r\n"):]
			c.pre, c.started, c.next = nil, true, 1
			c.want = strconv.AppendInt(c.want[:0], 1, 10)
			continue
		}
		b := p[0]
		p = p[1:]
		c.Bytes++
		if b != '\n' {
			c.line = append(c.line, b)
			if len(c.line) > 40 {
				c.Err = fmt.Errorf("after line %d: %q is no line of the sequence", c.next-1, c.line)
			}
			continue
		}
		l := c.line
		c.line = c.line[:0]
		if n := len(l); n >= 4 && string(l[n-4:]) == "END\r" {
			if !hasPrefix(c.want, l[:n-4]) {
				c.Err = fmt.Errorf("the sequence ended in %q, want a prefix of %q", l[:n-4], c.want)
			}
			c.Done = true
			return
		}
		if len(l) != len(c.want)+1 || l[len(l)-1] != '\r' || string(l[:len(l)-1]) != string(c.want) {
			c.Err = fmt.Errorf("line %d is %q, want %q", c.next, l, string(c.want)+"\r")
			return
		}
		c.Lines++
		c.next++
		c.want = strconv.AppendInt(c.want[:0], c.next, 10)
	}
}

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func hasPrefix(b, p []byte) bool { return len(p) <= len(b) && string(b[:len(p)]) == string(p) }

// viewerResult is one page's view of one session.
type viewerResult struct {
	session string
	lines   int64
	bytes   int64
	err     error
}

type sessionFigures struct {
	Sessions, Viewers int
	Duration          time.Duration
	Bytes             int64 // checked at all viewers together
	MinRate, MedRate  float64
	Failed            int
	FirstErr          error
	all               []viewerResult
}

func (f sessionFigures) String() string {
	return fmt.Sprintf("%d sessions x %d viewers for %v: %.1f MB checked, %.2f MB/s in all, per viewer min %.2f median %.2f MB/s, %d viewers failed",
		f.Sessions, f.Viewers/max(f.Sessions, 1), f.Duration, float64(f.Bytes)/1e6, float64(f.Bytes)/1e6/f.Duration.Seconds(),
		f.MinRate/1e6, f.MedRate/1e6, f.Failed)
}

func summarize(n, viewers int, d time.Duration, res []viewerResult) sessionFigures {
	f := sessionFigures{Sessions: n, Viewers: viewers, Duration: d, all: res}
	var rates []float64
	for _, r := range res {
		f.Bytes += r.bytes
		rates = append(rates, float64(r.bytes)/d.Seconds())
		if r.err != nil {
			f.Failed++
			if f.FirstErr == nil {
				f.FirstErr = fmt.Errorf("session %s: %w", r.session, r.err)
			}
		}
	}
	if len(rates) > 0 {
		slices.Sort(rates)
		f.MinRate, f.MedRate = rates[0], rates[len(rates)/2]
	}
	return f
}

type loadAuth struct {
	*softauthn.Authenticator
	// One ceremony at a time per passkey, as with a real one: auth
	// refuses a signature counter that goes backwards, which two
	// interleaved sign-ins with one authenticator would produce.
	mu sync.Mutex
}

var (
	usersMu sync.Mutex
	users   = map[string]*loadAuth{}
)

// loadUser returns user i's authenticator, registering it the first time.
func loadUser(i int) (string, *loadAuth, error) {
	name := fmt.Sprintf("lu%d", i)
	usersMu.Lock()
	defer usersMu.Unlock()
	if a := users[name]; a != nil {
		return name, a, nil
	}
	tok, err := env.s.Enroll(ctx(), name)
	if err != nil {
		return "", nil, err
	}
	b, err := env.s.Dial()
	if err != nil {
		return "", nil, err
	}
	defer b.Close()
	a := &loadAuth{Authenticator: softauthn.New("localhost", env.s.Origin)}
	if _, err := retry(func() (int, error) { return 0, b.Register(a.Authenticator, tok) }); err != nil {
		return "", nil, fmt.Errorf("register %s: %w", name, err)
	}
	users[name] = a
	return name, a, nil
}

// retry repeats a setup step that failed the way an overloaded suite
// fails (a helper call timed out inside the frontend, which reports it as
// "internal"): setting up is not what is measured.
func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		if v, err = f(); err == nil {
			return v, nil
		}
		var re *suiterun.RemoteError
		if !errors.As(err, &re) || re.Code != "internal" {
			return v, err
		}
		time.Sleep(time.Second)
	}
	return v, err
}

func page(a *loadAuth) (*suiterun.Browser, error) {
	return retry(func() (*suiterun.Browser, error) { return page1(a) })
}

func page1(a *loadAuth) (*suiterun.Browser, error) {
	b, err := env.s.Dial()
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	err = b.SignIn(a.Authenticator)
	a.mu.Unlock()
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// runSessions opens n sessions through the frontend, each with
// viewersPerSession pages attached, starts the sequence in all of them at
// once and checks every page's stream to the end marker.
func runSessions(tb testing.TB, n int, d time.Duration) sessionFigures {
	tb.Helper()
	type sess struct {
		id    string
		pages []*suiterun.Browser
	}
	all := make([]*sess, n)
	t0 := time.Now()
	var setupErr error
	var mu sync.Mutex
	sem := make(chan struct{}, setupParallel)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			fail := func(err error) {
				mu.Lock()
				if setupErr == nil {
					setupErr = fmt.Errorf("session %d: %w", i, err)
				}
				mu.Unlock()
			}
			_, a, err := loadUser(i / sessionsPerUser)
			if err != nil {
				fail(err)
				return
			}
			s := &sess{}
			all[i] = s
			for v := range viewersPerSession {
				b, err := page(a)
				if err != nil {
					fail(err)
					return
				}
				s.pages = append(s.pages, b)
				if v == 0 {
					s.id, err = retry(b.Create)
				} else {
					_, err = b.Attach(s.id)
				}
				if err != nil {
					fail(err)
					return
				}
			}
			// The login shell must be reading before the command is typed,
			// so that seq's own timeout is the clock for every session.
			<-sem
			err = s.pages[0].Ready()
			sem <- struct{}{}
			if err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, s := range all {
			if s != nil {
				for _, b := range s.pages {
					b.Close()
				}
			}
		}
	}()
	if setupErr != nil {
		tb.Fatal(setupErr)
	}

	tb.Logf("%d sessions with %d pages each set up in %v", n, viewersPerSession, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	defer func() { tb.Logf("streams checked to their end in %v", time.Since(t0).Round(time.Millisecond)) }()
	res := make([]viewerResult, 0, n*viewersPerSession)
	var resMu sync.Mutex
	for _, s := range all {
		if err := s.pages[0].Type(command(d) + "\n"); err != nil {
			tb.Fatal(err)
		}
	}
	for _, s := range all {
		for _, b := range s.pages {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var c seqChecker
				var msgErr error
				err := b.Stream(func(p []byte) bool {
					c.feed(p)
					return !c.Done && c.Err == nil && msgErr == nil
				}, func(m map[string]any) {
					// A page that was skipped ahead, or saw the shell end or
					// an error, lost bytes.
					switch m["t"] {
					case "skipped", "exit", "error":
						msgErr = fmt.Errorf("frontend said %v", m)
					}
				})
				err = errors.Join(err, c.Err, msgErr)
				if err != nil && !c.started {
					err = fmt.Errorf("%w; before any START: %q", err, tailBytes(c.pre, 300))
				}
				if err == nil && !c.Done {
					err = errors.New("stream stopped before the end marker")
				}
				if err == nil && c.Lines == 0 {
					err = errors.New("no line of the sequence arrived")
				}
				resMu.Lock()
				res = append(res, viewerResult{session: s.id, lines: c.Lines, bytes: c.Bytes, err: err})
				resMu.Unlock()
			}()
		}
	}
	wg.Wait()
	return summarize(n, n*viewersPerSession, d, res)
}

// directSessions is the baseline: the same command in n ptys the test
// opens and reads itself, no helper, frontend or WebSocket between.
func directSessions(tb testing.TB, n int, d time.Duration) sessionFigures {
	tb.Helper()
	res := make([]viewerResult, n)
	var wg sync.WaitGroup
	for i := range n {
		master, slave, err := pty.Open()
		if err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("stty sane; echo START; timeout %.0f stdbuf -o 64K seq 1 999999999999; echo END", d.Seconds()))
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		slave.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer master.Close()
			var c seqChecker
			buf := make([]byte, 32<<10)
			for !c.Done && c.Err == nil {
				k, err := master.Read(buf)
				c.feed(buf[:k])
				if err != nil {
					break
				}
			}
			werr := cmd.Wait()
			if c.Err == nil && !c.Done {
				c.Err = fmt.Errorf("pty ended before the end marker (%v)", werr)
			}
			res[i] = viewerResult{session: fmt.Sprint("direct", i), lines: c.Lines, bytes: c.Bytes, err: c.Err}
		}()
	}
	wg.Wait()
	return summarize(n, n, d, res)
}

// TestSessions: sessions print sequence numbers through the frontend to
// two pages each; every page must get every byte, in order, to the end.
func TestSessions(t *testing.T) {
	n, d := sessionLoad()
	f := runSessions(t, n, d)
	t.Logf("through the frontend: %v", f)
	for _, r := range f.all {
		if r.err != nil {
			t.Logf("%s: %v", r.session, r.err)
		}
	}
	if f.Failed > 0 {
		t.Fatalf("%d of %d pages lost or garbled output; first: %v", f.Failed, f.Viewers, f.FirstErr)
	}
}

// BenchmarkSessions: the session load with its figures as metrics, and
// the same programs read straight from their ptys as the baseline (for at
// most 10 s: it is a rate).
func BenchmarkSessions(b *testing.B) {
	n, d := sessionLoad()
	var f, base sessionFigures
	for b.Loop() {
		f = runSessions(b, n, d)
		base = directSessions(b, n, min(d, 10*time.Second))
	}
	b.Logf("frontend %v\ndirect %v", f, base)
	if f.Failed > 0 || base.Failed > 0 {
		b.Fatalf("lost output: frontend %v (%v), direct %v (%v)", f, f.FirstErr, base, base.FirstErr)
	}
	rate := func(s sessionFigures) float64 { return float64(s.Bytes) / 1e6 / s.Duration.Seconds() }
	b.ReportMetric(float64(n), "sessions")
	b.ReportMetric(rate(f), "MB/s")
	b.ReportMetric(f.MinRate/1e6, "min-viewer-MB/s")
	b.ReportMetric(rate(base), "direct-MB/s")
	// The frontend delivers each byte to two pages; the baseline reads it
	// once. Compare what the shells got out per second.
	b.ReportMetric(rate(f)/viewersPerSession/rate(base), "tput-ratio")
}
