// Package e2e drives the whole suite as a browser would, over the
// frontend's WebSocket with a software authenticator: the real helper
// binaries and sluice-frontend, built here, each on its socket in a temp
// runtime directory; the frontend gets its TCP socket as an activation fd
// (LISTEN_FDS, name "http"), as under systemd or the runner.
package e2e

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
	"testing"
	"time"

	"sluice/helpers/grant"
	"sluice/msg"
	"sluice/suite"
)

const policyFile = `# e2e policy
allow alice as root on .host
allow bob as root on .host
deny * as * on *
`

var env struct {
	root    string // repository root
	dir     string
	bin     string
	runDir  string
	origin  string
	url     string // ws://127.0.0.1:PORT/ws
	ln      *net.TCPListener
	helpers []*exec.Cmd
	logs    map[string]*syncBuffer

	mu       sync.Mutex
	frontend *exec.Cmd
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.Exit(code)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

func run(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		return 1, errors.New("needs root: the shell helper starts login shells as other users (CI runs as root)")
	}
	env.root = repoRoot()
	dir, err := os.MkdirTemp("", "sluice-e2e")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	env.dir = dir
	env.bin, env.runDir = filepath.Join(dir, "bin"), filepath.Join(dir, "run")
	for _, d := range []string{env.bin, env.runDir, filepath.Join(dir, "auth")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return 1, err
		}
	}
	if err := buildWeb(env.root); err != nil {
		return 1, err
	}
	build := exec.Command("go", "build", "-o", env.bin+"/",
		"sluice/helpers/auth/cmd/sluice-auth", "sluice/helpers/policy/cmd/sluice-policy",
		"sluice/helpers/shell/cmd/sluice-shell", "sluice/helpers/ptystore/cmd/sluice-ptystore",
		"sluice/frontend/cmd/sluice-frontend", "sluice/cmd/sluicectl")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Dir = env.root
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("go build: %v\n%s", err, out)
	}
	man, err := suite.BuildManifest(env.bin)
	if err != nil {
		return 1, err
	}
	manPath := filepath.Join(env.runDir, "build-ids.json")
	if err := man.Write(manPath); err != nil {
		return 1, err
	}
	keyPath := filepath.Join(dir, "grant.key")
	if _, err := grant.WriteKeyFile(keyPath); err != nil {
		return 1, err
	}
	polPath := filepath.Join(dir, "policy")
	if err := os.WriteFile(polPath, []byte(policyFile), 0o644); err != nil {
		return 1, err
	}

	env.ln, err = net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 1, err
	}
	port := env.ln.Addr().(*net.TCPAddr).Port
	env.origin = fmt.Sprintf("http://localhost:%d", port)
	env.url = fmt.Sprintf("ws://127.0.0.1:%d/ws", port)

	env.logs = map[string]*syncBuffer{}
	defer stopAll()
	for _, h := range []struct {
		name string
		args []string
	}{
		{msg.Shell, []string{"--backend=embedded"}},
		{msg.Policy, []string{"--policy", polPath, "--grant-key", keyPath}},
		{msg.PtyStore, []string{"--grant-key", keyPath}},
		{msg.Auth, []string{"--state-dir", filepath.Join(dir, "auth"), "--grant-key", keyPath, "--origin", env.origin}},
	} {
		sock := filepath.Join(env.runDir, h.name+".sock")
		cmd := exec.Command(filepath.Join(env.bin, suite.BinaryName(h.name)), append([]string{"--listen", sock}, h.args...)...)
		cmd.Env = suiteEnv()
		env.logs[h.name] = &syncBuffer{}
		cmd.Stderr = env.logs[h.name]
		if err := cmd.Start(); err != nil {
			return 1, err
		}
		env.helpers = append(env.helpers, cmd)
		exited := make(chan struct{})
		go func() { cmd.Process.Wait(); close(exited) }()
		if err := waitForSocket(sock, exited); err != nil {
			return 1, fmt.Errorf("%s: %v\n%s", h.name, err, env.logs[h.name])
		}
	}
	if err := startFrontend(); err != nil {
		return 1, err
	}
	code := m.Run()
	if code != 0 {
		for name, l := range env.logs {
			fmt.Fprintf(os.Stderr, "--- %s log ---\n%s", name, l)
		}
	}
	return code, nil
}

// buildWeb makes sure the page's npm assets are there for go:embed, as
// `make web` does.
func buildWeb(root string) error {
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

func suiteEnv() []string {
	return []string{"SLUICE_RUNTIME_DIR=" + env.runDir, "SLUICE_MANIFEST=" + filepath.Join(env.runDir, "build-ids.json"),
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
}

// startFrontend runs sluice-frontend on the test's listening socket,
// passed as activation fd 3 named "http". LISTEN_PID must be the
// frontend's own pid, which only the exec'ing shell knows.
func startFrontend() error {
	f, err := env.ln.File()
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, filepath.Join(env.bin, "sluice-frontend"))
	cmd.Env = append(suiteEnv(), "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
	cmd.ExtraFiles = []*os.File{f}
	if env.logs["frontend"] == nil {
		env.logs["frontend"] = &syncBuffer{}
	}
	cmd.Stderr = env.logs["frontend"]
	if err := cmd.Start(); err != nil {
		return err
	}
	env.mu.Lock()
	env.frontend = cmd
	env.mu.Unlock()
	return nil
}

// killFrontend kills the frontend with SIGKILL, as a crash would.
func killFrontend() {
	env.mu.Lock()
	cmd := env.frontend
	env.frontend = nil
	env.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
}

func stopAll() {
	killFrontend()
	for _, p := range env.helpers {
		p.Process.Signal(syscall.SIGTERM)
		p.Wait()
	}
	if env.ln != nil {
		env.ln.Close()
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

// enroll runs `sluicectl enroll --json USER` and returns the token.
func enroll(t *testing.T, user string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(env.bin, "sluicectl"), "enroll", "--json", "--base-url", env.origin, user)
	cmd.Env = suiteEnv()
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("sluicectl enroll: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var r struct {
		Token string `json:"token"`
		URL   string `json:"url"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("sluicectl enroll output %q: %v", out, err)
	}
	if !strings.HasSuffix(r.URL, "/enroll#"+r.Token) {
		t.Fatalf("enrollment link %q does not carry the token in its fragment", r.URL)
	}
	return r.Token
}
