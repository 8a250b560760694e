package main

import (
	"bytes"
	"strings"
	"testing"

	"sluice/msg"
)

// A compromised fleet host chooses what its pty-list answers and its
// errors say; the text table must neither pass terminal control bytes to
// the admin's terminal nor let one row pose as several, or as another
// host's.
func TestSessionsTableShowsHostTextInert(t *testing.T) {
	cases := []struct {
		name string
		row  hostSession
		want string // in the output, as shown
	}{
		{"retitle the terminal", hostSession{Host: "h1", SessionInfo: &msg.SessionInfo{ID: "s1\x1b]0;owned\x07", Owner: "alice"}}, `"s1\x1b]0;owned\a"`},
		{"clear the screen", hostSession{Host: "h1", SessionInfo: &msg.SessionInfo{ID: "s2", Owner: "\x1b[2J\x1b[Halice"}}, `"\x1b[2J\x1b[Halice"`},
		{"a C1 CSI", hostSession{Host: "h1", SessionInfo: &msg.SessionInfo{ID: "s3", Owner: "bob", UnixUser: "\u009b2J"}}, `"\u009b2J"`},
		{"a forged row of h2", hostSession{Host: "h1", SessionInfo: &msg.SessionInfo{ID: "s4", Owner: "carol\nh2\tforged\tmallory"}}, `"carol\nh2\tforged\tmallory"`},
		{"its error", hostSession{Host: "h1", Error: "forbidden: no\r\x1b[1A\x1b[2K.host  real  root"}, `"forbidden: no\r\x1b[1A\x1b[2K.host  real  root"`},
		{"plain text stays as it is", hostSession{Host: "h1", SessionInfo: &msg.SessionInfo{ID: "abc-123", Owner: "dave", Machine: "web 1"}}, "abc-123  dave"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printSessions(&out, []hostSession{c.row}); err != nil {
				t.Fatal(err)
			}
			s := out.String()
			for _, r := range s {
				if r != '\n' && (r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0) {
					t.Fatalf("control character %U reaches the terminal: %q", r, s)
				}
			}
			if n := strings.Count(s, "\n"); n != 2 {
				t.Errorf("%d lines for one row, want 2 (header and row): %q", n, s)
			}
			if !strings.Contains(s, c.want) {
				t.Errorf("output %q does not show %s", s, c.want)
			}
		})
	}
}
