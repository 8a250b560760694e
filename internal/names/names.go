// Package names says which user and machine names sluice passes on. Both
// the policy and the shell helper check them: a name that starts with '-'
// could be read as an option somewhere down the line, and one with '/' or
// ':' as a path or a passwd field separator.
package names

import "strings"

// Host is the machine name of the host itself, as in machinectl.
const Host = ".host"

// MaxLen bounds unix user and machine names.
const MaxLen = 64

// MaxSluiceUser bounds sluice user names (as the auth helper does).
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

// Machine accepts ".host" and hostname-like machine names as machined
// does: labels of letters, digits, '-' and '_' joined by single dots.
func Machine(s string) bool {
	if s == Host {
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
// 1 to 32 of [a-z0-9_.-], starting with a letter or underscore.
func SluiceUser(s string) bool {
	if s == "" || len(s) > MaxSluiceUser {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}
