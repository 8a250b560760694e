// Package names says which user and machine names sluice passes on. Both
// the policy and the shell helper check them: a name that starts with '-'
// could be read as an option somewhere down the line, and one with '/' or
// ':' as a path or a passwd field separator.
package names

import (
	"fmt"
	"strings"

	"sluice/msg"
)

// MaxLen bounds unix user and machine names.
const MaxLen = 64

// MaxSluiceUser bounds sluice user names.
const MaxSluiceUser = 32

// UnixUser accepts what useradd's default NAME_REGEX and most directories
// accept: letters, digits, '_', '.', '-', not starting with '-' or '.',
// optionally ending in '$' (machine accounts).
func UnixUser(s string) bool {
	if s == "" || len(s) > MaxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9', c == '-', c == '.':
			if i == 0 && (c == '-' || c == '.') {
				return false
			}
		case c == '$' && i == len(s)-1 && i > 0:
		default:
			return false
		}
	}
	return true
}

// Machine accepts msg.HostMachine and hostname-like machine names as machined
// does: labels of letters, digits, '-' and '_' joined by single dots.
func Machine(s string) bool {
	if s == msg.HostMachine {
		return true
	}
	if s == "" || len(s) > MaxLen {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || label[0] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// SluiceUser accepts sluice user names as the auth helper issues them:
// 1 to MaxSluiceUser of [a-z0-9_.-], starting with a letter or underscore.
// That is safe in logs, file names and links, and a subset of portable unix
// names. CheckSluiceUser says why a name is refused.
func SluiceUser(s string) bool { return CheckSluiceUser(s) == nil }

// CheckSluiceUser is SluiceUser with the reason, for errors a person reads
// (auth's enrollment and admin ops).
func CheckSluiceUser(s string) error {
	if s == "" || len(s) > MaxSluiceUser {
		return fmt.Errorf("user name of %d bytes, want 1..%d", len(s), MaxSluiceUser)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-'):
		default:
			return fmt.Errorf("user name %q: byte %d (%q) not allowed; use [a-z_][a-z0-9_.-]*", s, i, c)
		}
	}
	return nil
}
