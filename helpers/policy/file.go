package policy

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"sluice/internal/names"
	"sluice/msg"
)

// DefaultFile is where the admin writes the policy.
const DefaultFile = "/etc/sluice/policy"

// Limits that keep a policy file a reviewable list, not a database.
const (
	MaxLine  = 4096
	MaxRules = 10000
)

// Wildcards and the "same name" target.
const (
	Any      = "*"
	SameName = "="
)

// Rule is one allow or deny line.
type Rule struct {
	File    string
	Line    int
	Allow   bool
	Who     string   // sluice user, "%group" or "*"
	As      string   // unix account, "*" or "=" (the sluice user's own name)
	On      string   // machine, ".host" or "*"
	Command []string // allow only: the exact argv permitted; nil: login shell only
	// Limits are the rule's own (allow only): each set one overrides the
	// file's default for sessions the rule allows.
	Limits RuleLimits
	// Record: allow only: the session is recorded (nil: not). See
	// docs/recording.md.
	Record *msg.RecordSpec
}

// String is the rule as it would be written, with where it was: what the
// audit trail records.
func (r Rule) String() string {
	verb := "deny"
	if r.Allow {
		verb = "allow"
	}
	s := fmt.Sprintf("%s %s as %s on %s", verb, r.Who, r.As, r.On)
	s += r.Limits.String()
	if r.Record != nil {
		s += " record"
		if r.Record.Input {
			s += " input"
		}
		if r.Record.FailOpen {
			s += " fail-open"
		}
	}
	if r.Command != nil {
		s += " command " + strings.Join(r.Command, " ")
	}
	return fmt.Sprintf("%s (%s:%d)", s, r.File, r.Line)
}

// Policy is a parsed policy file: rules in file order, and groups.
type Policy struct {
	File   string
	Rules  []Rule
	Groups map[string][]string
	// Audits are the audit lines in file order: who may watch live
	// sessions read-only and play recordings (see audit.go).
	Audits []AuditRule
	// OnRevoke is what happens to a live session the file no longer
	// allows: msg.OnRevokeEnd (the default) or msg.OnRevokeDetach.
	OnRevoke string
	// onRevokeLine is where OnRevoke was set; 0: not set (the default).
	onRevokeLine int
	// Limits are the file's defaults (limit lines), over DefaultLimits.
	Limits RuleLimits
	// limitLines is where each of Limits was set, by name.
	limitLines map[string]int
}

// ParseError names the file and line of a malformed policy.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a policy. Any line it does not fully understand is an error
// naming the line: a policy that half-parsed could allow what the admin
// meant to deny, so there is no "skip and warn".
func Parse(r io.Reader, file string) (*Policy, error) {
	p := &Policy{File: file, Groups: map[string][]string{}, OnRevoke: msg.OnRevokeEnd, limitLines: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), MaxLine)
	n := 0
	for sc.Scan() {
		n++
		if err := p.parseLine(sc.Text(), n); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, &ParseError{file, n + 1, fmt.Sprintf("line longer than %d bytes", MaxLine)}
		}
		return nil, fmt.Errorf("policy: %s: %w", file, err)
	}
	return p, nil
}

func (p *Policy) parseLine(line string, n int) error {
	fail := func(format string, args ...any) error {
		return &ParseError{p.File, n, fmt.Sprintf(format, args...)}
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return fail("control character 0x%02x", c)
		}
	}
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil
	}
	switch f[0] {
	case "group":
		return p.parseGroup(f, fail)
	case "on-revoke":
		return p.parseOnRevoke(f, n, fail)
	case "limit":
		return p.parseLimit(f, n, fail)
	case "audit":
		if len(p.Rules)+len(p.Audits) >= MaxRules {
			return fail("more than %d rules", MaxRules)
		}
		a, err := p.parseAudit(f, fail)
		if err != nil {
			return err
		}
		a.File, a.Line = p.File, n
		p.Audits = append(p.Audits, a)
		return nil
	case "allow", "deny":
		if len(p.Rules)+len(p.Audits) >= MaxRules {
			return fail("more than %d rules", MaxRules)
		}
		r, err := p.parseRule(f, fail)
		if err != nil {
			return err
		}
		r.File, r.Line = p.File, n
		p.Rules = append(p.Rules, r)
		return nil
	}
	return fail("unknown keyword %q; want allow, deny, audit, group, limit or on-revoke", f[0])
}

// on-revoke end|detach. Once per file: two would leave the reader to guess
// which one counts.
func (p *Policy) parseOnRevoke(f []string, n int, fail func(string, ...any) error) error {
	if len(f) != 2 || (f[1] != msg.OnRevokeEnd && f[1] != msg.OnRevokeDetach) {
		return fail("want: on-revoke end|detach")
	}
	if p.onRevokeLine != 0 {
		return fail("on-revoke set twice (first on line %d)", p.onRevokeLine)
	}
	p.OnRevoke, p.onRevokeLine = f[1], n
	return nil
}

// group NAME MEMBER...
func (p *Policy) parseGroup(f []string, fail func(string, ...any) error) error {
	if len(f) < 3 {
		return fail("want: group NAME MEMBER...")
	}
	name := f[1]
	if !names.SluiceUser(name) {
		return fail("invalid group name %q", name)
	}
	if _, dup := p.Groups[name]; dup {
		return fail("group %q defined twice", name)
	}
	var members []string
	for _, m := range f[2:] {
		if !names.SluiceUser(m) {
			return fail("group %s: invalid member %q (groups hold sluice user names)", name, m)
		}
		if !slices.Contains(members, m) {
			members = append(members, m)
		}
	}
	p.Groups[name] = members
	return nil
}

// checkWho checks a rule's WHO: "*", a defined "%group" or a user name.
func (p *Policy) checkWho(who string, fail func(string, ...any) error) error {
	switch {
	case who == Any:
	case strings.HasPrefix(who, "%"):
		if _, ok := p.Groups[who[1:]]; !ok {
			return fail("group %q is not defined (define it above with: group %s MEMBER...)", who[1:], who[1:])
		}
	case !names.SluiceUser(who):
		return fail("invalid sluice user %q", who)
	}
	return nil
}

// allow|deny WHO as ACCOUNT on MACHINE [command ARGV...]
func (p *Policy) parseRule(f []string, fail func(string, ...any) error) (Rule, error) {
	r := Rule{Allow: f[0] == "allow"}
	if len(f) < 6 || f[2] != "as" || f[4] != "on" {
		return r, fail("want: %s WHO as ACCOUNT on MACHINE", f[0])
	}
	r.Who, r.As, r.On = f[1], f[3], f[5]
	if err := p.checkWho(r.Who, fail); err != nil {
		return r, err
	}
	if r.As != Any && r.As != SameName && !names.UnixUser(r.As) {
		return r, fail("invalid unix account %q", r.As)
	}
	if r.On != Any && !names.Machine(r.On) {
		return r, fail("invalid machine %q", r.On)
	}
	rest := f[6:]
	// Limits and record, in any order, before the command.
options:
	for len(rest) > 0 {
		switch {
		case isLimitName(rest[0]):
			if !r.Allow {
				return r, fail("deny rules take no limits: they allow no session to limit")
			}
			if len(rest) < 2 {
				return r, fail("%s without a duration", rest[0])
			}
			if err := r.Limits.set(rest[0], rest[1]); err != nil {
				return r, fail("%v", err)
			}
			rest = rest[2:]
		case rest[0] == "record":
			if !r.Allow {
				return r, fail("deny rules take no record: nothing is opened to record")
			}
			if r.Record != nil {
				return r, fail("record given twice")
			}
			r.Record = &msg.RecordSpec{}
			rest = rest[1:]
			if len(rest) > 0 && rest[0] == "input" {
				r.Record.Input, rest = true, rest[1:]
			}
			if len(rest) > 0 && rest[0] == "fail-open" {
				r.Record.FailOpen, rest = true, rest[1:]
			}
		default:
			break options
		}
	}
	if len(rest) == 0 {
		return r, nil
	}
	if rest[0] == "fail-open" || rest[0] == "input" {
		return r, fail("%q belongs after record: record [input] [fail-open]", rest[0])
	}
	if rest[0] != "command" {
		return r, fail("unknown option %q; the options are: idle|detached|max DURATION, record [input] [fail-open], then command /ABSOLUTE/PATH [ARG...]", rest[0])
	}
	if !r.Allow {
		return r, fail("deny rules take no command: they deny whatever is asked")
	}
	if len(rest) < 2 {
		return r, fail("command without a program")
	}
	if !strings.HasPrefix(rest[1], "/") {
		return r, fail("command %q is not an absolute path", rest[1])
	}
	r.Command = slices.Clone(rest[1:])
	return r, nil
}
