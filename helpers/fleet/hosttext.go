package fleet

import (
	"strconv"
	"strings"
	"unicode"
)

// A host's error text is the host's to choose, and a compromised host
// chooses it to reach whoever reads it: sluicectl prints it to an admin's
// terminal, the page shows it. What the gateway passes on is inert:
// control characters escaped, the length bounded, and a code that is no
// word of lower-case letters and dashes taken for no code at all.

// maxHostText bounds a host's error text as passed on.
const maxHostText = 512

// inert is s with every non-printable rune escaped as Go would quote it,
// cut to maxHostText bytes.
func inert(s string) string {
	if len(s) > maxHostText {
		s = strings.ToValidUTF8(s[:maxHostText], "") + "…"
	}
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// isCode says whether c looks like an error code (msg.Code*).
func isCode(c string) bool {
	if c == "" || len(c) > 32 {
		return false
	}
	for _, r := range c {
		if (r < 'a' || r > 'z') && r != '-' {
			return false
		}
	}
	return true
}
