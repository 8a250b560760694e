// Package fair measures sluice against baselines that do what sluice does
// (issue 15), each in the same run and alternating with it:
//
//   - a one-shot call to the real long-running helper (sluice-ptystore,
//     once on its own socket with --listen and once under `sluice run`,
//     whose runner takes every call's log line) against a raw round trip
//     served by a separate process: sequential p50, and the throughput of
//     8 clients at once;
//   - an Accept=yes call to the real auth and policy binaries under the
//     runner, up to the instance being reaped, against fork+exec+wait of
//     the same binary;
//   - a keystroke echo and a 100 MB `cat` through the frontend under the
//     runner to a client in this process over a real WebSocket, against
//     the same program on a pty read directly by this process;
//   - the frontend's resident memory per idle session, from a fresh
//     frontend over its first 50 sessions.
//
// Every figure is taken in rounds (≥ 5), baseline and sluice alternating
// within each, and reported as the median over the rounds with the
// minimum and maximum beside it (units NAME, NAME-min, NAME-max).
// bench/report holds the targets. Run by `make bench`; needs root and the
// built binaries (SLUICE_TEST_BIN).
package fair

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/msg"
	"sluice/tests/figures"
	"sluice/tests/suiterun"
)

var env struct {
	dir string
	s   *suiterun.Suite
	key grant.Key
}

// rawEnv names the socket a child copy of this test binary serves the
// raw baseline on.
const rawEnv = "SLUICE_FAIR_RAW"

func TestMain(m *testing.M) {
	if p := os.Getenv(rawEnv); p != "" {
		if err := serveRaw(p); err != nil {
			fmt.Fprintln(os.Stderr, "fair: raw server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if script := os.Getenv(minRelayEnv); script != "" {
		if err := serveMinRelay(script, os.Getenv(minRelayPathEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "fair: minimal relay:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fair:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		return 1, errors.New("needs root: the runner switches users and the shells run as root")
	}
	if err := suiterun.RaiseNoFile(); err != nil {
		return 1, err
	}
	dir, err := os.MkdirTemp("", "sluice-fair-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	env.dir = dir
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
		log := s.Log.String()
		fmt.Fprintf(os.Stderr, "--- runner log (last 20000 bytes) ---\n%s", log[max(0, len(log)-20000):])
	}
	if err := s.Stop(); err != nil {
		return 1, err
	}
	return code, nil
}

// serveRaw is the raw baseline's server, in a process of its own as every
// helper is: accept, a goroutine per connection (as rpc.Server), one
// read, a reply of a helper's size, close. It ends when its stdin closes.
func serveRaw(path string) error {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		l.Close()
	}()
	fmt.Println("ready")
	reply := make([]byte, 160) // the two hello lines, an empty error frame, a small payload
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil
		}
		go func() {
			buf := make([]byte, 512)
			c.Read(buf)
			c.Write(reply)
			c.Close()
		}()
	}
}

// startRaw runs serveRaw in a child copy of this test binary and returns
// its socket.
func startRaw(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "raw.sock")
	if line, _ := startChild(tb, "raw server", rawEnv+"="+path); line != "ready" {
		tb.Fatalf("raw server: %q", line)
	}
	return path
}

// startChild runs a child copy of this test binary with env added, in a
// session of its own (daemon), until the test ends (its stdin closes),
// and returns the first line it prints and its process ID.
func startChild(tb testing.TB, what string, env ...string) (string, int) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = daemon()
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { in.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatalf("%s: %q %v", what, line, err)
	}
	return strings.TrimSuffix(line, "\n"), cmd.Process.Pid
}

// daemon starts a server as daemons are started, the runner's units and
// systemd's services included: in a session of its own. Where the kernel
// has CONFIG_SCHED_AUTOGROUP (outside cgroups: no systemd), a session is
// also a scheduler group, and on a loaded machine a server in its
// client's group is woken far sooner than one in its own (measured on the
// 2-core VM at load 25: the same sluice-ptystore 1.05-1.5x raw in the
// bench's group, 1.8-3.2x in its own). Baselines and helpers alike get
// their own.
func daemon() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// rawCall is the baseline round trip: connect, write what an rpc client
// writes, read to EOF, close.
func rawCall(path string, req, buf []byte) error {
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

// signed is a grant for user made with the suite's grant key, as auth
// makes one on sign-in.
func signed(tb testing.TB, user string) msg.Grant {
	tb.Helper()
	g, err := grant.Sign(env.key, user, time.Now(), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

func ctx() context.Context { return context.Background() }

// nRounds is the number of alternating rounds of a figure: def, or
// $SLUICE_FAIR_ROUNDS for every figure. The figures that swing most with
// the machine's other load (8 clients, spawns, echo) take more rounds by
// default, so that the median moves less from one run to the next.
func nRounds(def int) int { return figures.EnvInt("SLUICE_FAIR_ROUNDS", def) }
