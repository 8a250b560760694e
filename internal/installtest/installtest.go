// Package installtest builds the real binaries and installs them with
// scripts/install.sh into a temporary DESTDIR, for the deployment tests
// (systemd units, install layout, sluicectl audit) that need an installed
// tree to check against.
package installtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Root is the repository root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		t.Fatal("not inside the sluice module")
	}
	return filepath.Dir(mod)
}

// Mains are the main packages a full install needs, with whether each is
// built without cgo (as the Makefile does for helpers and the frontend).
var Mains = []struct {
	Pkg    string
	Binary string
	Static bool
}{
	{"./cmd/sluice", "sluice", false}, // optional: skipped while it does not exist
	{"./cmd/sluicectl", "sluicectl", false},
	{"./helpers/auth/cmd/sluice-auth", "sluice-auth", true},
	{"./helpers/policy/cmd/sluice-policy", "sluice-policy", true},
	{"./helpers/shell/cmd/sluice-shell", "sluice-shell", true},
	{"./helpers/ptystore/cmd/sluice-ptystore", "sluice-ptystore", true},
	{"./helpers/hangup/cmd/sluice-hangup", "sluice-hangup", true},
	{"./helpers/record/cmd/sluice-record", "sluice-record", true},
	{"./frontend/cmd/sluice-frontend", "sluice-frontend", true},
	// The embedded shell backend's login, with cgo for PAM; beside sluice-shell.
	{"./helpers/shell/login/cmd/sluice-login", "sluice-login", false},
}

var (
	mu       sync.Mutex
	buildDir string
	built    = map[string]string{} // binary -> "" or the build error
)

// Build compiles the named mains (every one in Mains when none are named)
// into one directory shared by the test process, each at most once. A
// main that does not exist yet fails the test: an install without it is
// not an install.
//
// With $SLUICE_BIN_DIR set (make test can point it at the bin/ it just
// built), the binaries there are used as they are.
func Build(t testing.TB, binaries ...string) string {
	t.Helper()
	if dir := os.Getenv("SLUICE_BIN_DIR"); dir != "" {
		for _, m := range Mains {
			if len(binaries) > 0 && !slices.Contains(binaries, m.Binary) || m.Binary == "sluice" {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, m.Binary)); err != nil {
				t.Fatalf("$SLUICE_BIN_DIR: %v", err)
			}
		}
		return dir
	}
	root := Root(t)
	mu.Lock()
	defer mu.Unlock()
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "sluice-installtest-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = dir
	}
	var errs []string
	for _, m := range Mains {
		if len(binaries) > 0 && !slices.Contains(binaries, m.Binary) {
			continue
		}
		msg, done := built[m.Binary]
		if _, err := os.Stat(filepath.Join(root, m.Pkg)); err != nil && m.Binary == "sluice" {
			continue
		}
		if !done {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(buildDir, m.Binary), m.Pkg)
			cmd.Dir = root
			cmd.Env = os.Environ()
			if m.Static {
				cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				msg = m.Pkg + ": " + err.Error() + "\n" + string(out)
			}
			built[m.Binary] = msg
		}
		// The runner is optional in an install (the units do not use it)
		// and has its own tests: a broken one is left out, not fatal here.
		if msg != "" && m.Binary != "sluice" {
			errs = append(errs, msg)
		}
	}
	if len(errs) > 0 {
		t.Fatalf("building the binaries:\n%s", strings.Join(errs, "\n"))
	}
	return buildDir
}

// Install runs scripts/install.sh DESTDIR PREFIX BINDIR into a fresh
// temporary DESTDIR and returns it.
func Install(t testing.TB, prefix string) string {
	t.Helper()
	bin := Build(t)
	dest := t.TempDir()
	cmd := exec.Command(filepath.Join(Root(t), "scripts/install.sh"), dest, prefix, bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/install.sh: %v\n%s", err, out)
	}
	return dest
}

// Cleanup removes the build directory; call it from TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}
