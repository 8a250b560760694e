package fleet

import (
	"strings"
	"testing"

	"sluice/msg"
	"sluice/rpc"
)

// A compromised host's error text reaches the gateway's callers (an
// admin's terminal through sluicectl, the page) with no control byte, no
// more than maxHostText of it, and under a code only if it looks like one.
func TestRelayErrorIsInert(t *testing.T) {
	cases := []struct {
		text, code, want string
	}{
		{"denied: no rule allows alice", msg.CodeDenied, "h1: no rule allows alice"},
		{"forbidden: x\x1b]0;owned\x07\r\n.host  s1", rpc.CodeForbidden, `h1: x\x1b]0;owned\a\r\n.host  s1`},
		{"\x1b[2J: gone", msg.CodeFailed, `h1: \x1b[2J: gone`},
		{"not-found: \u009b2J", msg.CodeNotFound, `h1: \u009b2J`},
		{"no code at all", msg.CodeFailed, "h1: no code at all"},
		{"failed: " + strings.Repeat("a", 1<<20), msg.CodeFailed, "h1: " + strings.Repeat("a", maxHostText) + "…"},
	}
	for _, c := range cases {
		err := relayError("h1", c.text)
		var e *rpc.Error
		if !asError(err, &e) {
			t.Fatalf("%q: %T", c.text, err)
		}
		if e.Code != c.code || e.Msg != c.want {
			t.Errorf("%.40q: code %q msg %.80q, want %q %.80q", c.text, e.Code, e.Msg, c.code, c.want)
		}
		for _, r := range e.Msg {
			if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
				t.Errorf("%.40q: control character %U passed on", c.text, r)
			}
		}
	}
}

func asError(err error, e **rpc.Error) bool {
	x, ok := err.(*rpc.Error)
	*e = x
	return ok
}
