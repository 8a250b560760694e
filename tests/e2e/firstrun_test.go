package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"strings"
	"testing"
	"time"

	"sluice/runner"
	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

// TestEnrollmentLinkFirstRunOnly: `sluice run` with the shipped on_ready
// step prints an enrollment link for the user who started it while that
// user has no passkey, and once one is registered, says so instead of
// making another link.
func TestEnrollmentLinkFirstRunOnly(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := runner.DefaultConfigJSON()
	if err != nil {
		t.Fatal(err)
	}
	var def map[string]any
	if err := json.Unmarshal(raw, &def); err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is 0700, and the units run as uids of
	// their own.
	dir, err := os.MkdirTemp("", "sluice-firstrun-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	start := func() *suiterun.Suite {
		t.Helper()
		s, err := suiterun.Start(suiterun.Options{Dir: dir, Bin: env.Bin, Tweak: func(c suiterun.RawConfig) {
			c["on_ready"] = def["on_ready"]
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		return s
	}
	// waitOut waits for the on_ready step's output, printed once it ends.
	waitOut := func(s *suiterun.Suite, want *regexp.Regexp) []string {
		t.Helper()
		for end := time.Now().Add(suiterun.Wait); ; time.Sleep(20 * time.Millisecond) {
			if m := want.FindStringSubmatch(s.Stdout.String()); m != nil {
				return m
			}
			if time.Now().After(end) {
				t.Fatalf("runner's stdout has no %v:\n%s", want, s.Stdout)
			}
		}
	}

	s := start()
	m := waitOut(s, regexp.MustCompile(`(http://localhost:\d+)/enroll#([A-Za-z0-9_-]+)`))
	if m[1] != s.Origin {
		t.Fatalf("link for %s, frontend at %s", m[1], s.Origin)
	}
	b, err := s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	a := softauthn.New("localhost", s.Origin)
	if err := b.Register(a, m[2]); err != nil {
		t.Fatal(err)
	}
	if err := b.SignIn(a); err != nil || b.User != me.Username {
		t.Fatalf("signed in as %q: %v", b.User, err)
	}
	b.Close()
	s.Stop()

	s = start()
	waitOut(s, regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("%s has 1 passkey(s); sign in at %s", me.Username, s.Origin))))
	if out := s.Stdout.String(); strings.Contains(out, "/enroll#") {
		t.Fatalf("second run made another link:\n%s", out)
	}
}
