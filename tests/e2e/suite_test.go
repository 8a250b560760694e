// Package e2e drives the whole suite as a browser would, over the
// frontend's WebSocket with a software authenticator (tests/softauthn),
// against the real binaries under the real `sluice run` (tests/harness).
package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"sluice/tests/harness"
)

const policyFile = `# e2e policy
allow alice as root on .host
allow bob as root on .host
allow bob as sl13e2e on .host
deny * as * on *
`

var env struct {
	*harness.Suite
	origin string
	url    string
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain()) // a helper call as another uid (revoke_test.go)
	}
	s, err := harness.Start(policyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		if s != nil {
			s.DumpLogs(os.Stderr)
		}
		s.Stop()
		os.Exit(1)
	}
	env.Suite, env.origin, env.url = s, s.Origin, s.WSURL
	code := m.Run()
	if code != 0 {
		s.DumpLogs(os.Stderr)
	}
	s.Stop()
	os.Exit(code)
}

func killFrontend() error  { return env.KillFrontend() }
func startFrontend() error { return env.StartFrontend() }

// enroll runs `sluicectl enroll` and returns the token.
func enroll(t *testing.T, user string) string {
	t.Helper()
	token, link, err := env.Enroll(user)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(link, "/enroll#"+token) {
		t.Fatalf("enrollment link %q does not carry the token in its fragment", link)
	}
	return token
}
