package audit

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Profile is a parsed AppArmor profile file, reduced to what an audit
// needs: the profile's name and attachment, and every rule in it. The
// parser knows the subset of the policy language sluice's profiles use and
// rejects anything else, so a rule it cannot judge is an error rather
// than something silently skipped.
type Profile struct {
	Path     string
	Name     string
	Attach   string
	Includes []string // top-level include lines, e.g. "tunables/global"
	Rules    []Rule
}

// Rule is one rule of a profile.
type Rule struct {
	Line  int
	Text  string // the rule with whitespace collapsed, without the comma
	Kind  string // "file", "network", "signal", "dbus", "unix", "capability", or the leading keyword
	Owner bool   // file rule with the owner qualifier
	Path  string // file rule: the path pattern
	Perms string // file rule: the permission letters
}

// ParseProfileFile reads one profile file holding exactly one profile.
func ParseProfileFile(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: profile: %w", err)
	}
	p, err := ParseProfile(string(b))
	if err != nil {
		return nil, fmt.Errorf("audit: profile %s: %w", path, err)
	}
	p.Path = path
	return p, nil
}

// ParseProfile parses the text of one profile file.
func ParseProfile(text string) (*Profile, error) {
	p := &Profile{}
	depth := 0
	var stmt strings.Builder
	stmtLine := 0
	for i, raw := range strings.Split(text, "\n") {
		lineNo := i + 1
		line := raw
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "#include") {
			// The old include syntax looks like a comment; it is not one.
			line = strings.TrimPrefix(t, "#")
		} else if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if stmt.Len() == 0 {
			stmtLine = lineNo
		} else {
			stmt.WriteByte(' ')
		}
		stmt.WriteString(line)
		s := stmt.String()
		switch {
		case strings.HasSuffix(s, "{"):
			if depth != 0 {
				return nil, fmt.Errorf("line %d: nested block %q (hats and child profiles are not audited)", stmtLine, s)
			}
			if err := p.header(strings.TrimSpace(strings.TrimSuffix(s, "{"))); err != nil {
				return nil, fmt.Errorf("line %d: %w", stmtLine, err)
			}
			depth++
		case s == "}":
			if depth != 1 {
				return nil, fmt.Errorf("line %d: unbalanced }", stmtLine)
			}
			depth--
		case strings.HasPrefix(s, "include "):
			inc := strings.Trim(strings.TrimSpace(strings.TrimPrefix(s, "include")), "<>\"")
			if depth != 0 {
				// An include inside the profile adds rules this parser
				// cannot see, so it is refused rather than trusted.
				return nil, fmt.Errorf("line %d: include %q inside the profile", stmtLine, inc)
			}
			p.Includes = append(p.Includes, inc)
		case strings.HasSuffix(s, ","):
			r, err := parseRule(strings.TrimSpace(strings.TrimSuffix(s, ",")))
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", stmtLine, err)
			}
			r.Line = stmtLine
			if depth == 0 {
				if r.Kind == "abi" {
					break
				}
				return nil, fmt.Errorf("line %d: rule %q outside a profile", stmtLine, r.Text)
			}
			p.Rules = append(p.Rules, r)
		default:
			// A rule continues on the next line (dbus rules do).
			continue
		}
		stmt.Reset()
	}
	if stmt.Len() != 0 {
		return nil, fmt.Errorf("line %d: unterminated rule %q", stmtLine, stmt.String())
	}
	if depth != 0 {
		return nil, fmt.Errorf("missing }")
	}
	if p.Name == "" {
		return nil, fmt.Errorf("no profile")
	}
	return p, nil
}

func (p *Profile) header(h string) error {
	if p.Name != "" {
		return fmt.Errorf("second profile %q in one file", h)
	}
	f := strings.Fields(h)
	if len(f) > 0 && f[0] == "profile" {
		f = f[1:]
	}
	for len(f) > 0 && strings.HasPrefix(f[len(f)-1], "flags=") {
		f = f[:len(f)-1]
	}
	switch len(f) {
	case 1:
		p.Name, p.Attach = f[0], f[0]
	case 2:
		p.Name, p.Attach = f[0], f[1]
	default:
		return fmt.Errorf("bad profile header %q", h)
	}
	if !strings.HasPrefix(p.Attach, "/") {
		return fmt.Errorf("profile %q attaches to no path", p.Name)
	}
	return nil
}

var ruleKeywords = map[string]bool{
	"network": true, "signal": true, "dbus": true, "unix": true, "capability": true,
	"ptrace": true, "mount": true, "umount": true, "remount": true, "pivot_root": true,
	"change_profile": true, "rlimit": true, "file": true, "link": true, "abi": true,
	"userns": true, "io_uring": true, "mqueue": true,
}

func parseRule(s string) (Rule, error) {
	s = strings.Join(strings.Fields(s), " ")
	r := Rule{Text: s}
	rest := s
	for _, q := range []string{"audit ", "allow "} {
		rest = strings.TrimPrefix(rest, q)
	}
	if strings.HasPrefix(rest, "deny ") {
		return r, fmt.Errorf("deny rule %q: sluice profiles allow, they do not carve out", s)
	}
	if strings.HasPrefix(rest, "owner ") {
		r.Owner = true
		rest = strings.TrimPrefix(rest, "owner ")
	}
	word, _, _ := strings.Cut(rest, " ")
	if ruleKeywords[word] && !(word == "file" && rest != "file") {
		r.Kind = word
		return r, nil
	}
	if word == "file" {
		// Bare "file," allows every path.
		r.Kind, r.Path, r.Perms = "file", "/**", "rwlkmix"
		return r, nil
	}
	if strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, "@{") {
		f := strings.Fields(rest)
		if len(f) < 2 {
			return r, fmt.Errorf("file rule %q without permissions", s)
		}
		r.Kind, r.Path, r.Perms = "file", f[0], strings.Join(f[1:], " ")
		if len(f) > 2 || strings.Trim(r.Perms, "rwakmlixPUCpuc") != "" {
			return r, fmt.Errorf("file rule %q: unexpected permissions or transition", s)
		}
		return r, nil
	}
	return r, fmt.Errorf("unknown rule %q", s)
}

// Summary is a one-line description of what a profile allows.
func (p *Profile) Summary() string {
	var files, dbus, other []string
	caps := 0
	net := map[string]bool{}
	for _, r := range p.Rules {
		switch r.Kind {
		case "file":
			if strings.ContainsAny(r.Perms, "wak") {
				files = append(files, r.Path+" "+r.Perms)
			}
		case "network":
			net[strings.TrimPrefix(r.Text, "network ")] = true
		case "dbus":
			if strings.HasPrefix(r.Text, "dbus send") {
				m := "?"
				for _, f := range strings.Fields(r.Text) {
					if v, ok := strings.CutPrefix(f, "member="); ok {
						m = v
					}
				}
				dbus = append(dbus, m)
			}
		case "capability":
			caps++
		case "signal":
		default:
			other = append(other, r.Kind)
		}
	}
	nets := make([]string, 0, len(net))
	for n := range net {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	var b strings.Builder
	fmt.Fprintf(&b, "%d rules; writes: %s; network: %s; capabilities: %d", len(p.Rules),
		orNone(strings.Join(files, ", ")), orNone(strings.Join(nets, ", ")), caps)
	if len(dbus) > 0 {
		fmt.Fprintf(&b, "; dbus send: %s", strings.Join(dbus, ", "))
	}
	if len(other) > 0 {
		fmt.Fprintf(&b, "; other: %s", strings.Join(other, ", "))
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
