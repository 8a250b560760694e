// Package figures holds what the suite's benchmarks against a baseline
// (tests/fair, tests/fleet) measure the same way: figures per round
// reported as median with min–max, the echo of one key and the cat of a
// large file through a page against the same program on a pty. The
// reported names (NAME, NAME-min, NAME-max) are what scripts/bench.sh and
// bench/report read.
package figures

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"sluice/tests/suiterun"
)

// Rounds collects one figure per round and reports the median with the
// minimum and maximum.
type Rounds map[string][]float64

func (r Rounds) Add(name string, v float64) { r[name] = append(r[name], v) }

// Report reports each figure's median as NAME and, with more than one
// round, its extremes as NAME-min and NAME-max.
func (r Rounds) Report(b *testing.B) {
	for name, vs := range r {
		s := slices.Clone(vs)
		slices.Sort(s)
		b.ReportMetric(s[len(s)/2], name)
		if len(s) > 1 {
			b.ReportMetric(s[0], name+"-min")
			b.ReportMetric(s[len(s)-1], name+"-max")
		}
	}
}

// String is every round of every figure, by name, for the benchmark's log.
func (r Rounds) String() string {
	var names []string
	for n := range r {
		names = append(names, n)
	}
	slices.Sort(names)
	out := ""
	for _, n := range names {
		out += fmt.Sprintf("%s %.4g\n", n, r[n])
	}
	return out
}

// Quantile is the q-quantile of d (d is left unsorted).
func Quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*q))]
}

// US is d in microseconds, the echo figures' unit.
func US(d time.Duration) float64 { return float64(d) / 1e3 }

// EnvInt is $name as a positive number, or def.
func EnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// EchoScript makes the shell a program that echoes each key itself, as
// readline does; "R%sY" D prints RDY, which its own echo does not contain.
const EchoScript = `stty raw -echo; printf 'R%sY' D; exec cat`

// PageEcho is one key typed at br, timed until its echo arrives.
func PageEcho(br *suiterun.Browser) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		t := time.Now()
		if err := br.Type("k"); err != nil {
			return 0, err
		}
		var d time.Duration
		err := br.Stream(func(p []byte) bool { d = time.Since(t); return len(p) == 0 }, nil)
		return d, err
	}
}

// CatFile writes size bytes of printable lines to path.
func CatFile(tb testing.TB, path string, size int) {
	tb.Helper()
	line := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), 2)
	if err := os.WriteFile(path, bytes.Repeat(line, size/len(line)+1)[:size], 0o644); err != nil {
		tb.Fatal(err)
	}
}

// CatScript prints RDY, then cats file once a key arrives: head waits for
// that key so the clock starts with the reading.
func CatScript(file string) string {
	return fmt.Sprintf("stty raw -echo; printf 'R%%sY' D; head -c 1 >/dev/null; exec cat %s", file)
}

// PageCat runs CatScript's script at br and times its size bytes from the
// key that starts them to the last one read.
func PageCat(br *suiterun.Browser, script string, size int) (time.Duration, error) {
	if err := br.Run(script, "RDY"); err != nil {
		return 0, err
	}
	t := time.Now()
	if err := br.Type("g"); err != nil {
		return 0, err
	}
	var n int
	if err := br.Stream(func(p []byte) bool { n += len(p); return n < size }, nil); err != nil {
		return 0, fmt.Errorf("%d bytes: %w", n, err)
	}
	return time.Since(t), nil
}

// PtyCat is PageCat's baseline on a pty m that has printed RDY already.
func PtyCat(m io.ReadWriter, size int) (time.Duration, error) {
	buf := make([]byte, 64<<10)
	t := time.Now()
	if _, err := m.Write([]byte("g")); err != nil {
		return 0, err
	}
	var n int
	for n < size {
		k, err := m.Read(buf)
		n += k
		if err != nil {
			return 0, fmt.Errorf("%d bytes: %w", n, err)
		}
	}
	return time.Since(t), nil
}
