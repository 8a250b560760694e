package e2e

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

// privateBin copies the built binaries into DIR/checkout/bin, where DIR is
// 0700 and root's, like a clone in /root or in a Debian home.
func privateBin(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-private-") // 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v %v, want a 0700 directory", dir, st.Mode(), err)
	}
	bin = filepath.Join(dir, "checkout", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(env.Bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		copyFile(t, filepath.Join(env.Bin, e.Name()), filepath.Join(bin, e.Name()))
	}
	return dir, bin
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPrivateCheckout: binaries in a directory only root can traverse (a
// checkout in /root) still give a working suite: the runner executes
// each helper by fd, so its dynamic user needs the file's execute bit
// only. Sign in, open a shell, type.
func TestPrivateCheckout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the units run as dynamic users only under a root runner")
	}
	_, bin := privateBin(t)
	s, err := suiterun.Start(suiterun.Options{Bin: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	if strings.Contains(s.Log.String(), "permission denied") {
		t.Fatalf("runner log has permission errors:\n%s", s.Log)
	}
	token, err := s.Enroll(t.Context(), "root")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a := softauthn.New("localhost", s.Origin)
	if err := b.Register(a, token); err != nil {
		t.Fatal(err)
	}
	if err := b.SignIn(a); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(); err != nil {
		t.Fatalf("create: %v\nrunner log:\n%s", err, s.Log)
	}
	if err := b.Run("echo private-$((6*7))", "private-42"); err != nil {
		t.Fatal(err)
	}
}

// TestPrivateRuntimeDirRefused: a runtime or state directory below a
// directory the units' users cannot traverse cannot work, so the runner
// says so once, naming each unit and path, and exits non-zero, instead of
// restarting helpers that fail with "permission denied".
func TestPrivateRuntimeDirRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the units run as dynamic users only under a root runner")
	}
	dir, bin := privateBin(t)
	_, err := suiterun.Start(suiterun.Options{Bin: bin, Dir: filepath.Join(dir, "suite")})
	if err == nil {
		t.Fatal("runner started with its runtime directory under a 0700 directory")
	}
	out := err.Error()
	if !strings.Contains(out, "exited before it was up") {
		t.Fatalf("runner did not exit at once: %v", err)
	}
	for _, want := range []string{
		"unit frontend (uid ", "unit ptystore (uid ", "unit auth (uid ", "unit policy (uid ",
		filepath.Join(dir, "suite", "run") + ": " + dir + " (mode 0700, owner 0:0) cannot be traversed",
		filepath.Join(dir, "suite", "state") + ": " + dir + " (mode 0700, owner 0:0) cannot be traversed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("runner's message lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "runner: started") || strings.Contains(out, "permission denied") {
		t.Errorf("runner started units before refusing:\n%s", out)
	}
	if n := strings.Count(out, "unit frontend (uid "); n != 1 {
		t.Errorf("frontend named %d times, want once:\n%s", n, out)
	}
}
