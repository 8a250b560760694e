// Package harness starts the whole sluice suite for cross-process tests:
// the real helper binaries and sluice-frontend, built into a temp
// directory, each on its socket in a temp runtime directory. The frontend
// gets its TCP socket as an activation fd (LISTEN_FDS, name "http"), as
// under systemd or the runner, so a test can kill -9 it and start it again
// on the same socket.
package harness

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"sluice/helpers/grant"
	"sluice/msg"
	"sluice/suite"
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
	Logs   map[string]*Buffer

	ln      *net.TCPListener
	helpers []*exec.Cmd

	mu       sync.Mutex
	frontend *exec.Cmd
}

// Buffer collects a process's stderr.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// Start builds and starts the suite with the given policy file text.
// Stop must be called (also after an error).
func Start(policy string) (*Suite, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root: the shell helper starts login shells as other users (CI runs as root)")
	}
	s := &Suite{Root: RepoRoot(), Logs: map[string]*Buffer{}}
	dir, err := os.MkdirTemp("", "sluice-suite")
	if err != nil {
		return nil, err
	}
	s.Dir = dir
	s.Bin, s.RunDir = filepath.Join(dir, "bin"), filepath.Join(dir, "run")
	for _, d := range []string{s.Bin, s.RunDir, filepath.Join(dir, "auth")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return s, err
		}
	}
	if err := BuildWeb(s.Root); err != nil {
		return s, err
	}
	build := exec.Command("go", "build", "-o", s.Bin+"/",
		"sluice/helpers/auth/cmd/sluice-auth", "sluice/helpers/policy/cmd/sluice-policy",
		"sluice/helpers/shell/cmd/sluice-shell", "sluice/helpers/ptystore/cmd/sluice-ptystore",
		"sluice/frontend/cmd/sluice-frontend", "sluice/cmd/sluicectl")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Dir = s.Root
	if out, err := build.CombinedOutput(); err != nil {
		return s, fmt.Errorf("go build: %v\n%s", err, out)
	}
	man, err := suite.BuildManifest(s.Bin)
	if err != nil {
		return s, err
	}
	if err := man.Write(filepath.Join(s.RunDir, "build-ids.json")); err != nil {
		return s, err
	}
	keyPath := filepath.Join(dir, "grant.key")
	if _, err := grant.WriteKeyFile(keyPath); err != nil {
		return s, err
	}
	polPath := filepath.Join(dir, "policy")
	if err := os.WriteFile(polPath, []byte(policy), 0o644); err != nil {
		return s, err
	}

	s.ln, err = net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return s, err
	}
	port := s.ln.Addr().(*net.TCPAddr).Port
	s.Origin = fmt.Sprintf("http://localhost:%d", port)
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.WSURL = fmt.Sprintf("ws://127.0.0.1:%d/ws", port)

	for _, h := range []struct {
		name string
		args []string
	}{
		{msg.Shell, []string{"--backend=embedded"}},
		{msg.Policy, []string{"--policy", polPath, "--grant-key", keyPath}},
		{msg.PtyStore, []string{"--grant-key", keyPath}},
		{msg.Auth, []string{"--state-dir", filepath.Join(dir, "auth"), "--grant-key", keyPath, "--origin", s.Origin}},
	} {
		sock := filepath.Join(s.RunDir, h.name+".sock")
		cmd := exec.Command(filepath.Join(s.Bin, suite.BinaryName(h.name)), append([]string{"--listen", sock}, h.args...)...)
		cmd.Env = s.Env()
		s.Logs[h.name] = &Buffer{}
		cmd.Stderr = s.Logs[h.name]
		if err := cmd.Start(); err != nil {
			return s, err
		}
		s.helpers = append(s.helpers, cmd)
		exited := make(chan struct{})
		go func() { cmd.Process.Wait(); close(exited) }()
		if err := waitForSocket(sock, exited); err != nil {
			return s, fmt.Errorf("%s: %v\n%s", h.name, err, s.Logs[h.name])
		}
	}
	return s, s.StartFrontend()
}

// BuildWeb makes sure the page's npm assets are there for go:embed, as
// `make web` does.
func BuildWeb(root string) error {
	web := filepath.Join(root, "frontend", "web")
	if _, err := os.Stat(filepath.Join(web, "dist", "xterm.js")); err == nil {
		return nil
	}
	for _, args := range [][]string{{"npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"}, {"npm", "run", "--silent", "build"}} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = web
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Env is the environment the suite's processes (and sluicectl) get.
func (s *Suite) Env() []string {
	return []string{"SLUICE_RUNTIME_DIR=" + s.RunDir, "SLUICE_MANIFEST=" + filepath.Join(s.RunDir, "build-ids.json"),
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
}

// StartFrontend runs sluice-frontend on the suite's listening socket,
// passed as activation fd 3 named "http". LISTEN_PID must be the
// frontend's own pid, which only the exec'ing shell knows.
func (s *Suite) StartFrontend(args ...string) error {
	f, err := s.ln.File()
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, filepath.Join(s.Bin, "sluice-frontend")}, args...)...)
	cmd.Env = append(s.Env(), "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
	cmd.ExtraFiles = []*os.File{f}
	if s.Logs["frontend"] == nil {
		s.Logs["frontend"] = &Buffer{}
	}
	cmd.Stderr = s.Logs["frontend"]
	if err := cmd.Start(); err != nil {
		return err
	}
	s.mu.Lock()
	s.frontend = cmd
	s.mu.Unlock()
	return nil
}

// FrontendPID is the running frontend's pid, 0 if none.
func (s *Suite) FrontendPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frontend == nil {
		return 0
	}
	return s.frontend.Process.Pid
}

// KillFrontend kills the frontend with SIGKILL, as a crash would.
func (s *Suite) KillFrontend() {
	s.mu.Lock()
	cmd := s.frontend
	s.frontend = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
}

// Stop ends every process and removes the temp directory.
func (s *Suite) Stop() {
	if s == nil {
		return
	}
	s.KillFrontend()
	for _, p := range s.helpers {
		p.Process.Signal(syscall.SIGTERM)
		p.Wait()
	}
	if s.ln != nil {
		s.ln.Close()
	}
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
}

// DumpLogs writes every process's log to w, for a failed run.
func (s *Suite) DumpLogs(w *os.File) {
	for name, l := range s.Logs {
		fmt.Fprintf(w, "--- %s log ---\n%s", name, l)
	}
}

func waitForSocket(path string, exited <-chan struct{}) error {
	for {
		if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before listening")
		case <-time.After(10 * time.Millisecond):
		}
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
