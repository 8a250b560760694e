// Command report turns `go test -bench` output into bench/REPORT.md and a
// bar chart of every ratio against its baseline (bench/ratios.png). Each
// benchmark in sluice measures its own baseline in the same run and reports
// the ratio as a metric whose unit ends in "ratio"; this tool only gathers,
// compares with the targets, and draws.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"image/color"
	"log"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// target says what a ratio must be for the figure to be met.
type target struct {
	max, min float64 // 0 = no bound
	what     string
}

// targets are keyed by "package.Benchmark/metric" (without -GOMAXPROCS).
var targets = map[string]target{
	"rpc.BenchmarkOneShot/p50-ratio":         {max: 1.25, what: "one-shot call with handshake vs raw connect+write+read, p50"},
	"rpc.BenchmarkParallel8/slowdown-ratio":  {max: 1.3, what: "8-client throughput, raw calls/s over rpc calls/s"},
	"runner.BenchmarkAcceptSpawnRatio/ratio": {max: 1.2, what: "Accept=yes per-connection spawn + call vs bare fork+exec"},
	"frontend.BenchmarkCat100MB/tput-ratio":  {min: 0.8, what: "cat 100 MB through pty+frontend+WebSocket vs direct pty read"},
	"frontend.BenchmarkTail/tail-ratio":      {min: 1, what: "bytes before exit through the WebSocket vs read directly"},
	"revoke.BenchmarkCheckRatio/ratio":       {max: 2, what: "grant check with the revocation list (stat + lookup) vs grant.Verify alone"},

	// Issue 15: the fair figures (tests/fair), on which the targets are
	// judged: real binaries, baselines in processes of their own.
	"fair.BenchmarkCall/standalone-p50-ratio":           {max: 1.25, what: "pty-list to sluice-ptystore (--listen) vs raw round trip to a separate process, p50"},
	"fair.BenchmarkCall/run-p50-ratio":                  {max: 1.25, what: "pty-list to sluice-ptystore under sluice run vs the same raw round trip, p50"},
	"fair.BenchmarkParallel8/standalone-slowdown-ratio": {max: 1.3, what: "8 clients: raw calls/s over sluice-ptystore (--listen) calls/s"},
	"fair.BenchmarkParallel8/run-slowdown-ratio":        {max: 1.3, what: "8 clients: raw calls/s over sluice-ptystore under sluice run calls/s"},
	"fair.BenchmarkSpawn/auth-ratio":                    {max: 1.2, what: "Accept=yes sluice-auth login-begin, reaped, vs fork+exec+wait of sluice-auth"},
	"fair.BenchmarkSpawn/policy-ratio":                  {max: 1.2, what: "Accept=yes sluice-policy decision, reaped, vs fork+exec+wait of sluice-policy"},
	"fair.BenchmarkEcho/echo-p50-ratio":                 {max: 1.5, what: "keystroke echo through the suite to a WebSocket client in another process vs a direct pty read, p50"},
	"fair.BenchmarkEcho/echo-p99-ratio":                 {max: 2, what: "the same, p99"},
	"fair.BenchmarkCat100MB/tput-ratio":                 {min: 0.95, what: "cat 100 MB through the suite to a WebSocket client vs a direct pty read"},
	"ptystore.BenchmarkViewersReportRatio/duty-ratio":   {max: 0.01, what: "CPU of a full pty-viewers report (1024 sessions, over a real socket) over its 500 ms interval"},
	// Issue 17: the fleet (tests/fleet), gateway → host against plain
	// `ssh -tt host` through the same sshd, in the same run.
	"fleet.BenchmarkCat100MB/tput-ratio":               {min: 0.8, what: "cat 100 MB on a host through the gateway (frontend, fleet's ssh, relay) to a WebSocket client vs `ssh -tt host cat` on a pty read directly"},
	"record.BenchmarkRecordCat100MB/record-tput-ratio": {min: 0.9, what: "cat 100 MB through the recorder (second pty, recording written and sealed) vs the shell's pty read directly"},
}

// maxAbs are the targets that the issues set as absolute figures rather
// than ratios, keyed like targets: the figure must not exceed the value.
var maxAbs = map[string]float64{
	"frontend.BenchmarkEcho/echo-p50-us":              150,
	"frontend.BenchmarkEcho/echo-p99-us":              500,
	"frontend.BenchmarkCtrlCFlood/ctrlc-ms":           200,
	"frontend.BenchmarkIdleSessions/idle-KiB/session": 32,
	"frontend.BenchmarkTail/tail-lost-bytes":          0,
	"record.BenchmarkRecordEcho/record-added-p50-us":  50,
	"fair.BenchmarkSessionMemory/session-KiB":         32,
	// Issue 17: echo through the gateway at most 0.2 ms over ssh's, p50.
	"fleet.BenchmarkEcho/echo-p50-added-us": 200,
}

type result struct {
	pkg, name string
	iters     string
	metrics   []metric
}

type metric struct {
	unit  string
	value float64
}

// failures are the benchmarks that failed, listed in the report.
var failures []string

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

func parse(path string) ([]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []result
	pkg := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pkg: ") {
			pkg = strings.TrimPrefix(line, "pkg: ")
			if i := strings.LastIndex(pkg, "/"); i >= 0 {
				pkg = pkg[i+1:]
			}
			continue
		}
		if strings.HasPrefix(line, "FAILED: ") || strings.HasPrefix(line, "--- FAIL: ") {
			failures = append(failures, strings.TrimSpace(line))
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		r := result{pkg: pkg, name: m[1], iters: m[3]}
		fields := strings.Fields(m[4])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			r.metrics = append(r.metrics, metric{unit: fields[i+1], value: v})
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

func machine() string {
	cpu := "unknown cpu"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	return fmt.Sprintf("%s, %d cores, Linux %s, %s", cpu, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version())
}

func main() {
	in := flag.String("in", "bench/raw.txt", "go test -bench output")
	md := flag.String("md", "bench/REPORT.md", "report to write")
	png := flag.String("png", "bench/ratios.png", "chart to write")
	notes := flag.String("notes", "bench/NOTES.md", "hand-written notes appended to the report (where the time went, before and after); skipped if missing")
	flag.Parse()
	results, err := parse(*in)
	if err != nil {
		log.Fatalf("report: %v", err)
	}
	if len(results) == 0 {
		log.Fatalf("report: no benchmark lines in %s", *in)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# sluice benchmark report\n\n")
	fmt.Fprintf(&b, "- date: %s\n- machine: %s\n- produced by `make bench` (raw output in `bench/raw.txt`)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine())
	fmt.Fprintf(&b, "Every ratio is against a baseline measured in the same run of the same benchmark.\n"+
		"The targets are judged on the `fair.` figures (tests/fair: the real binaries, baselines in processes of\n"+
		"their own, clients in their own process): the median over the rounds, with min–max. The in-process\n"+
		"figures of the other packages are kept for finding where time goes.\n\n")
	if len(failures) > 0 {
		fmt.Fprintf(&b, "## Failed\n\n")
		for _, f := range failures {
			fmt.Fprintf(&b, "- `%s`\n", f)
		}
		fmt.Fprintf(&b, "\n")
	}
	fmt.Fprintf(&b, "## Ratios against their baselines\n\n| benchmark | metric | value | target | met |\n|---|---|---|---|---|\n")
	type bar struct {
		label string
		v     float64
	}
	var bars []bar
	for _, r := range results {
		for _, m := range r.metrics {
			if !strings.HasSuffix(m.unit, "ratio") {
				continue
			}
			key := r.pkg + "." + r.name + "/" + m.unit
			t, ok := targets[key]
			tgt, met := "—", "—"
			if ok {
				switch {
				case t.max > 0:
					tgt = fmt.Sprintf("≤ %.2f", t.max)
					met = yes(m.value <= t.max)
				case t.min > 0:
					tgt = fmt.Sprintf("≥ %.2f", t.min)
					met = yes(m.value >= t.min)
				}
			}
			fmt.Fprintf(&b, "| %s.%s | %s | %s | %s | %s |\n", r.pkg, r.name, m.unit, withRange(r, m), tgt, met)
			bars = append(bars, bar{label: strings.TrimPrefix(r.name, "Benchmark") + "\n" + m.unit, v: m.value})
		}
	}
	fmt.Fprintf(&b, "\n## Absolute figures with a target\n\n| benchmark | metric | value | target | met |\n|---|---|---|---|---|\n")
	for _, r := range results {
		for _, m := range r.metrics {
			if limit, ok := maxAbs[r.pkg+"."+r.name+"/"+m.unit]; ok {
				fmt.Fprintf(&b, "| %s.%s | %s | %s | ≤ %s | %s |\n", r.pkg, r.name, m.unit,
					withRange(r, m), strconv.FormatFloat(limit, 'g', 6, 64), yes(m.value <= limit))
			}
		}
	}
	fmt.Fprintf(&b, "\n## All figures\n\n| benchmark | iterations | figures |\n|---|---|---|\n")
	for _, r := range results {
		var parts []string
		for _, m := range r.metrics {
			parts = append(parts, fmt.Sprintf("%s %s", strconv.FormatFloat(m.value, 'g', 6, 64), m.unit))
		}
		fmt.Fprintf(&b, "| %s.%s | %s | %s |\n", r.pkg, r.name, r.iters, strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "\n![ratios](ratios.png)\n")
	if n, err := os.ReadFile(*notes); err == nil {
		fmt.Fprintf(&b, "\n%s", n)
	}
	if err := os.WriteFile(*md, []byte(b.String()), 0o644); err != nil {
		log.Fatalf("report: %v", err)
	}

	sort.SliceStable(bars, func(i, j int) bool { return bars[i].label < bars[j].label })
	p := plot.New()
	p.Title.Text = "sluice: each figure as a ratio to its same-run baseline"
	p.Y.Label.Text = "ratio"
	vals := make(plotter.Values, len(bars))
	names := make([]string, len(bars))
	for i, br := range bars {
		vals[i] = br.v
		names[i] = br.label
	}
	if len(bars) > 0 {
		ch, err := plotter.NewBarChart(vals, vg.Points(28))
		if err != nil {
			log.Fatalf("report: %v", err)
		}
		ch.Color = color.RGBA{R: 40, G: 110, B: 180, A: 255}
		p.Add(ch)
		one := plotter.NewFunction(func(float64) float64 { return 1 })
		one.Color = color.Gray{Y: 90}
		one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(one)
		p.NominalX(names...)
		p.X.Tick.Label.Rotation = 0.5
		p.X.Tick.Label.XAlign = -0.9
	}
	w := vg.Length(120+70*len(bars)) * vg.Millimeter / 4
	if w < 12*vg.Centimeter {
		w = 12 * vg.Centimeter
	}
	if err := p.Save(w, 11*vg.Centimeter, *png); err != nil {
		log.Fatalf("report: %v", err)
	}
	fmt.Printf("report: wrote %s and %s (%d benchmarks)\n", *md, *png, len(results))
}

// withRange is m's value, with the minimum and maximum over the rounds
// when the benchmark reported them (UNIT-min, UNIT-max): the value is then
// the median.
func withRange(r result, m metric) string {
	v := strconv.FormatFloat(m.value, 'g', 4, 64)
	lo, hi := math.NaN(), math.NaN()
	for _, o := range r.metrics {
		switch o.unit {
		case m.unit + "-min":
			lo = o.value
		case m.unit + "-max":
			hi = o.value
		}
	}
	if math.IsNaN(lo) || math.IsNaN(hi) {
		return v
	}
	return fmt.Sprintf("%s (%s–%s)", v, strconv.FormatFloat(lo, 'g', 4, 64), strconv.FormatFloat(hi, 'g', 4, 64))
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
