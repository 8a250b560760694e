// Package harness starts the whole sluice suite for cross-process tests
// (e2e, browser) the way a machine without systemd runs it: the real
// binaries under the real `sluice run`, with the embedded default config
// (each helper under its own uid, sockets and allowlists as shipped),
// changed only where a test must (tests/suiterun.Config). A test that
// kills the frontend sees the runner restart it on the same TCP socket.
package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"sluice/tests/suiterun"
)

// Suite is a running suite.
type Suite struct {
	Root   string // repository root
	Dir    string // temp dir holding everything below
	Bin    string
	RunDir string
	Origin string // http://localhost:PORT, what a browser on this machine sends
	URL    string // http://127.0.0.1:PORT
	WSURL  string // ws://127.0.0.1:PORT/ws
	// Run is the runner, for tests that look at its children or call
	// helpers directly.
	Run *suiterun.Suite

	mu     sync.Mutex
	killed int // the frontend pid KillFrontend killed, until a new one runs
}

// RepoRoot is the repository's top directory.
func RepoRoot() string { return suiterun.Root() }

// Start builds the binaries (or takes $SLUICE_TEST_BIN) and starts
// `sluice run` with the given policy file text. Stop must be called (also
// after an error; it takes a nil Suite).
func Start(policy string) (*Suite, error) { return StartTweaked(policy, nil) }

// StartTweaked is Start with tweak editing the runner's config first
// (extra flags for a unit), as suiterun.Options.Tweak.
func StartTweaked(policy string, tweak func(suiterun.RawConfig)) (*Suite, error) {
	return start(policy, tweak, false)
}

// StartFreshRoot is Start with a /root of the suite's own
// (suiterun.Options.FreshRootHome): root's login shells read only /etc's
// profile, so a stale lock that the host's dotfiles left (pyenv's rehash
// lock, made by any root login shell ended mid-profile, stalls every later
// one 60 s) cannot stall them. Not for tests that mount on the host after
// the start: the runner's mount namespace does not see those.
func StartFreshRoot(policy string) (*Suite, error) { return start(policy, nil, true) }

func start(policy string, tweak func(suiterun.RawConfig), freshRoot bool) (*Suite, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root: the suite's helpers run as uids of their own and the shell helper starts login shells as other users (CI runs as root)")
	}
	dir, err := os.MkdirTemp("", "sluice-suite")
	if err != nil {
		return nil, err
	}
	s := &Suite{Root: RepoRoot(), Dir: dir}
	// The helpers' own uids exec the binaries and reach the runtime
	// directory below it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return s, err
	}
	if s.Bin, err = suiterun.Binaries(dir); err != nil {
		return s, err
	}
	run, err := suiterun.Start(suiterun.Options{Dir: filepath.Join(dir, "suite"), Bin: s.Bin, Policy: policy, Tweak: tweak, FreshRootHome: freshRoot})
	if err != nil {
		return s, err
	}
	s.Run, s.RunDir = run, run.RunDir
	s.Origin = run.Origin
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", run.Port)
	s.WSURL = run.URL
	return s, nil
}

// Env is the environment sluicectl needs to find the suite.
func (s *Suite) Env() []string {
	return []string{"SLUICE_RUNTIME_DIR=" + s.RunDir, "SLUICE_MANIFEST=" + filepath.Join(s.RunDir, "build-ids.json"),
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
}

// FrontendPID is the running frontend's pid, 0 if none.
func (s *Suite) FrontendPID() int {
	if s.Run == nil {
		return 0
	}
	for _, p := range s.Run.Children() {
		if p.Name == "sluice-frontend" {
			return p.PID
		}
	}
	return 0
}

// KillFrontend kills the frontend with SIGKILL, as a crash would, and
// waits until the runner has reaped it. The runner starts a new one on
// the same socket; StartFrontend waits for that.
func (s *Suite) KillFrontend() error {
	pid, err := s.Run.WaitChild("sluice-frontend")
	if err != nil {
		return err
	}
	if err := s.Run.Kill(pid); err != nil {
		return err
	}
	s.mu.Lock()
	s.killed = pid
	s.mu.Unlock()
	return nil
}

// StartFrontend waits for the frontend the runner starts after
// KillFrontend. Under the runner its command line is the config's, so it
// takes no arguments.
func (s *Suite) StartFrontend(args ...string) error {
	if len(args) > 0 {
		return fmt.Errorf("harness: the runner starts the frontend with its configured arguments, not %q", args)
	}
	s.mu.Lock()
	old := s.killed
	s.mu.Unlock()
	_, err := s.Run.WaitChild("sluice-frontend", old)
	return err
}

// Stop ends the runner (and so every process of the suite) and removes
// the temp directory.
func (s *Suite) Stop() {
	if s == nil {
		return
	}
	if s.Run != nil {
		s.Run.Stop()
	}
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
}

// DumpLogs writes the runner's log, which carries every unit's, to w.
func (s *Suite) DumpLogs(w *os.File) {
	if s != nil && s.Run != nil {
		fmt.Fprintf(w, "--- sluice run log ---\n%s", s.Run.Log)
	}
}

// Enroll runs `sluicectl enroll --json USER` and returns the token and
// the enrollment link.
func (s *Suite) Enroll(user string) (token, link string, err error) {
	cmd := exec.Command(filepath.Join(s.Bin, "sluicectl"), "enroll", "--json", "--base-url", s.Origin, user)
	cmd.Env = s.Env()
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", "", fmt.Errorf("sluicectl enroll: %v\n%s", err, ee.Stderr)
		}
		return "", "", err
	}
	var r struct {
		Token string `json:"token"`
		URL   string `json:"url"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return "", "", fmt.Errorf("sluicectl enroll output %q: %v", out, err)
	}
	return r.Token, r.URL, nil
}
