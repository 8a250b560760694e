package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Request is what a decision is about.
type Request struct {
	User     string   // signed-in sluice user (from a verified grant)
	UnixUser string   // account asked for
	Machine  string   // machine asked for
	Args     []string // empty: login shell; else the exact argv asked for
}

// Decision is the outcome. Rule is the rule that decided, nil when no rule
// matched (default deny). Reason is fit to show the user.
type Decision struct {
	Allow  bool
	Rule   *Rule
	Reason string
}

// Decide applies the first rule that matches; none matching is a deny.
// An allow rule matches only the exact command it names (or, without
// one, only the login shell); a deny rule matches whatever is asked.
func (p *Policy) Decide(r Request) Decision {
	for i := range p.Rules {
		rule := &p.Rules[i]
		if !p.matches(rule, r) {
			continue
		}
		if rule.Allow {
			return Decision{Allow: true, Rule: rule}
		}
		return Decision{Rule: rule, Reason: reason(r)}
	}
	return Decision{Reason: reason(r)}
}

func (p *Policy) matches(rule *Rule, r Request) bool {
	if !p.appliesTo(rule, r.User) {
		return false
	}
	// Only a written "*" is a wildcard: "=" is the user's name, whatever
	// that name is.
	if rule.As != Any && account(rule, r.User) != r.UnixUser {
		return false
	}
	if rule.On != Any && rule.On != r.Machine {
		return false
	}
	if !rule.Allow {
		return true
	}
	if rule.Command == nil {
		return len(r.Args) == 0
	}
	return slices.Equal(rule.Command, r.Args)
}

// appliesTo reports whether rule's WHO names user: everyone, a group
// user is in, or user.
func (p *Policy) appliesTo(rule *Rule, user string) bool {
	switch {
	case rule.Who == Any:
		return true
	case strings.HasPrefix(rule.Who, "%"):
		return slices.Contains(p.Groups[rule.Who[1:]], user)
	}
	return rule.Who == user
}

// account is the ACCOUNT rule stands for when user asks: "=" is user's
// own name; a name or "*" stands for itself.
func account(rule *Rule, user string) string {
	if rule.As == SameName {
		return user
	}
	return rule.As
}

// reason says what was refused, in the user's terms, without naming the
// rules (the log has those).
func reason(r Request) string {
	what := "open a shell"
	if len(r.Args) > 0 {
		what = fmt.Sprintf("run %q", r.Args[0])
	}
	return fmt.Sprintf("%s may not %s as %s on %s", r.User, what, r.UnixUser, r.Machine)
}

// SessionAllowed decides whether a live session may go on: whether user
// could open it now, as a login shell as unixUser on machine. ptystore
// does not record a session's argv, so a session a command rule opened is
// judged as a login shell too, and the stricter answer wins.
func (p *Policy) SessionAllowed(user, unixUser, machine string) Decision {
	return p.Decide(Request{User: user, UnixUser: unixUser, Machine: machine})
}
