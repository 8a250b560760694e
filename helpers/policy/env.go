package policy

import "strings"

// MaxEnv bounds how many variables pass the filter (LC_* names are an
// open set).
const MaxEnv = 16

// FilterEnv keeps the variables a terminal needs and nothing else: TERM,
// LANG, LC_*, COLUMNS and LINES, each only with a value of the shape it
// has in practice. Everything else, and any malformed or repeated entry
// (the first one wins), is dropped: the environment is the classic way to
// make a privileged program (a login shell's profile scripts, the dynamic
// loader) do something else.
func FilterEnv(env []string) (kept []string, dropped int) {
	seen := map[string]bool{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || seen[k] || len(kept) >= MaxEnv || !allowedVar(k, v) {
			dropped++
			continue
		}
		seen[k] = true
		kept = append(kept, kv)
	}
	return kept, dropped
}

func allowedVar(k, v string) bool {
	switch {
	case k == "TERM":
		return validValue(v, "+-._")
	case k == "LANG", isLC(k):
		return validValue(v, "-._@")
	case k == "COLUMNS", k == "LINES":
		return validDimension(v)
	}
	return false
}

// isLC: LC_ and an upper-case category name (LC_ALL, LC_CTYPE, ...).
func isLC(k string) bool {
	rest, ok := strings.CutPrefix(k, "LC_")
	if !ok || rest == "" || len(rest) > 32 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < 'A' || c > 'Z') && c != '_' {
			return false
		}
	}
	return true
}

// validValue: 1 to 64 of letters, digits and the given punctuation.
// Terminal names ("xterm-256color") and locales ("en_US.UTF-8",
// "de_DE@euro", "C") fit; paths, spaces and shell syntax do not.
func validValue(v, punct string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(punct, c) >= 0) {
			return false
		}
	}
	return true
}

// validDimension: 1 to 9999, plain decimal.
func validDimension(v string) bool {
	if v == "" || len(v) > 4 || v[0] == '0' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}
