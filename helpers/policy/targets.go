package policy

import "sluice/internal/names"

// Target is an (account, machine) on which an allow rule offers user a
// login shell. Account and Machine are as the rule has them, except that
// "=" is resolved to the user's own name; either may be "*".
type Target struct {
	Account string
	Machine string
	Rule    *Rule // the allow rule that offers it
}

// Pattern reports whether t stands for more than one shell.
func (t Target) Pattern() bool { return t.Account == Any || t.Machine == Any }

// Targets lists, in rule order, the login shells the allow rules offer
// user, at most max of them (max <= 0: no bound); truncated says there
// were more. It is a hint for a form, not a decision: Decide stays the
// judge. So it leaves out only what it knows exactly to be unreachable:
//
//   - rules whose WHO does not name user;
//   - allow rules with a command, which never allow a login shell;
//   - an allow rule whose target an earlier deny for user covers whole:
//     the deny's account and machine are each "*" or the same as the
//     allow's. (Several denies together never cover more than one of
//     them does: a name is one point, and "*" is every name there is,
//     which no finite list of names covers.) A deny that covers only
//     part of a pattern leaves the pattern listed;
//   - a target listed already (the first rule that offers it stays).
//
// So every exact target listed is one Decide allows, and every login
// shell Decide allows is covered by a listed target (unless truncated).
func (p *Policy) Targets(user string, max int) (ts []Target, truncated bool) {
	if !names.SluiceUser(user) {
		// "=" would stand for a name no grant carries; nothing to offer.
		return nil, false
	}
	type key struct{ as, on string }
	denied := map[key]bool{}
	listed := map[key]bool{}
	for i := range p.Rules {
		r := &p.Rules[i]
		if !p.appliesTo(r, user) {
			continue
		}
		k := key{account(r, user), r.On}
		if !r.Allow {
			denied[k] = true
			continue
		}
		if r.Command != nil || listed[k] ||
			denied[k] || denied[key{Any, k.on}] || denied[key{k.as, Any}] || denied[key{Any, Any}] {
			continue
		}
		if max > 0 && len(ts) == max {
			return ts, true
		}
		listed[k] = true
		ts = append(ts, Target{Account: k.as, Machine: k.on, Rule: r})
	}
	return ts, false
}
