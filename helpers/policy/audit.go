package policy

import (
	"fmt"
	"slices"

	"sluice/internal/names"
	"sluice/msg"
)

// maxAuditRules bounds the rules an audit-scope answer names (for the log).
const maxAuditRules = 16

// AuditRule is one "audit WHO [on MACHINE]" line: WHO may watch live
// sessions on MACHINE read-only and play their recordings, whoever owns
// them. It grants no shell and no typing; allow and deny rules do not
// limit it, nor it them.
type AuditRule struct {
	File string
	Line int
	Who  string // sluice user, "%group" or "*"
	On   string // machine, ".host" or "*" (the default)
}

func (a AuditRule) String() string {
	return fmt.Sprintf("audit %s on %s (%s:%d)", a.Who, a.On, a.File, a.Line)
}

// audit WHO [on MACHINE]
func (p *Policy) parseAudit(f []string, fail func(string, ...any) error) (AuditRule, error) {
	a := AuditRule{On: Any}
	switch {
	case len(f) == 2:
	case len(f) == 4 && f[2] == "on":
		a.On = f[3]
	default:
		return a, fail("want: audit WHO [on MACHINE]")
	}
	a.Who = f[1]
	if err := p.checkWho(a.Who, fail); err != nil {
		return a, err
	}
	if a.On != Any && !names.Machine(a.On) {
		return a, fail("invalid machine %q", a.On)
	}
	return a, nil
}

// AuditScope is the machines user may audit, in file order, each once;
// "*" (any machine) makes it ["*"]. Empty: user is no auditor. At most
// msg.MaxTargets machines and maxAuditRules rules are returned, so the
// answer fits a frame whatever the file: a scope cut short grants less,
// never more.
func (p *Policy) AuditScope(user string) (machines []string, rules []string) {
	for _, a := range p.Audits {
		if !p.appliesTo(&Rule{Who: a.Who}, user) {
			continue
		}
		if len(rules) < maxAuditRules {
			rules = append(rules, a.String())
		}
		if a.On == Any {
			return []string{Any}, rules
		}
		if len(machines) < msg.MaxTargets && !slices.Contains(machines, a.On) {
			machines = append(machines, a.On)
		}
	}
	return machines, rules
}

// MayAudit is the yes-or-no form of AuditScope, for a caller that asks
// only whether user audits at all (the recording helper's check-audit):
// the reason is fit to show the user.
func (p *Policy) MayAudit(user string) (bool, string) {
	if m, _ := p.AuditScope(user); len(m) > 0 {
		return true, ""
	}
	return false, user + " may not audit sessions"
}
