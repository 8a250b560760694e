// Package installtest builds the real binaries and installs them with
// scripts/install.sh into a temporary DESTDIR, for the deployment tests
// (systemd units, install layout, sluicectl audit) that need an installed
// tree to check against.
package installtest

import (
	"os"
	"os/exec"
	"path/filepath"
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
	{"./cmd/sluice", "sluice", false},
	{"./cmd/sluicectl", "sluicectl", false},
	{"./helpers/auth/cmd/sluice-auth", "sluice-auth", true},
	{"./helpers/policy/cmd/sluice-policy", "sluice-policy", true},
	{"./helpers/shell/cmd/sluice-shell", "sluice-shell", true},
	{"./helpers/ptystore/cmd/sluice-ptystore", "sluice-ptystore", true},
	{"./frontend/cmd/sluice-frontend", "sluice-frontend", true},
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  string
)

// Build compiles every main into one directory, once per test process. A
// main that does not exist yet fails the test: an install without it is
// not an install.
func Build(t testing.TB) string {
	t.Helper()
	root := Root(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-installtest-bin-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		buildDir = dir
		var errs []string
		for _, m := range Mains {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, m.Binary), m.Pkg)
			cmd.Dir = root
			cmd.Env = os.Environ()
			if m.Static {
				cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				errs = append(errs, m.Pkg+": "+err.Error()+"\n"+string(out))
			}
		}
		buildErr = strings.Join(errs, "\n")
	})
	if buildErr != "" {
		t.Fatalf("building the binaries:\n%s", buildErr)
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
