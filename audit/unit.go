// Package audit reads what an admin installs, to say what each helper may
// do: systemd unit files (socket mode and group, accepted callers from
// ExecStart), AppArmor profiles (rules, parsed), and systemd-analyze's
// exposure score. sluicectl audit prints it; the deployment tests use the
// same parsers to check the shipped files, so what is audited is what is
// tested.
package audit

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Unit is a parsed unit file: per section, the assignments in file order.
type Unit struct {
	Path     string
	Name     string
	Sections map[string][]KV
}

// KV is one assignment line.
type KV struct {
	Key   string
	Value string
	Line  int
}

// ParseUnitFile reads a unit file (continuation lines and comments as
// systemd reads them; no drop-ins).
func ParseUnitFile(path string) (*Unit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: unit: %w", err)
	}
	defer f.Close()
	u := &Unit{Path: path, Name: filepath.Base(path), Sections: map[string][]KV{}}
	sc := bufio.NewScanner(f)
	section := ""
	lineNo, start := 0, 0
	var pending strings.Builder
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if pending.Len() == 0 {
			start = lineNo
			t := strings.TrimSpace(line)
			if t == "" || t[0] == '#' || t[0] == ';' {
				continue
			}
			if t[0] == '[' {
				if !strings.HasSuffix(t, "]") {
					return nil, fmt.Errorf("audit: %s:%d: bad section header %q", path, lineNo, t)
				}
				section = t[1 : len(t)-1]
				continue
			}
		} else if t := strings.TrimSpace(line); t != "" && (t[0] == '#' || t[0] == ';') {
			// Comments inside a continuation are skipped by systemd too.
			continue
		}
		if strings.HasSuffix(line, "\\") {
			pending.WriteString(strings.TrimSuffix(line, "\\"))
			pending.WriteByte(' ')
			continue
		}
		pending.WriteString(line)
		full := strings.TrimSpace(pending.String())
		pending.Reset()
		if section == "" {
			return nil, fmt.Errorf("audit: %s:%d: assignment outside a section", path, start)
		}
		k, v, ok := strings.Cut(full, "=")
		if !ok {
			return nil, fmt.Errorf("audit: %s:%d: not an assignment: %q", path, start, full)
		}
		u.Sections[section] = append(u.Sections[section], KV{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v), Line: start})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit: unit %s: %w", path, err)
	}
	return u, nil
}

// Values returns the effective values of a key, systemd-style: each
// assignment appends, an empty one clears what came before.
func (u *Unit) Values(section, key string) []string {
	var out []string
	for _, kv := range u.Sections[section] {
		if kv.Key != key {
			continue
		}
		if kv.Value == "" {
			out = nil
			continue
		}
		out = append(out, kv.Value)
	}
	return out
}

// Value returns the last assignment of a key, or "".
func (u *Unit) Value(section, key string) string {
	v := ""
	for _, kv := range u.Sections[section] {
		if kv.Key == key {
			v = kv.Value
		}
	}
	return v
}

// Has reports whether the key is assigned at all (even to "").
func (u *Unit) Has(section, key string) bool {
	for _, kv := range u.Sections[section] {
		if kv.Key == key {
			return true
		}
	}
	return false
}

// SplitCommand splits an ExecStart= value into words by systemd's quoting
// rules (double and single quotes, backslash escapes), after removing the
// special prefixes (-, @, :, +, !). Only one command per line is accepted;
// ";" chaining is not used by sluice's units.
func SplitCommand(s string) ([]string, error) {
	s = strings.TrimLeft(s, "-@:+!")
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("audit: unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("audit: empty command")
	}
	if words[len(words)-1] == ";" {
		return nil, fmt.Errorf("audit: chained commands in %q", s)
	}
	return words, nil
}

// Allows extracts the --allow PROTOCOL=SPEC flags from a helper command
// line, keyed by protocol.
func Allows(argv []string) map[string]string {
	out := map[string]string{}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		var v string
		switch {
		case a == "--allow" || a == "-allow":
			if i+1 >= len(argv) {
				continue
			}
			i++
			v = argv[i]
		case strings.HasPrefix(a, "--allow="):
			v = strings.TrimPrefix(a, "--allow=")
		case strings.HasPrefix(a, "-allow="):
			v = strings.TrimPrefix(a, "-allow=")
		default:
			continue
		}
		if p, spec, ok := strings.Cut(v, "="); ok {
			out[p] = spec
		}
	}
	return out
}
