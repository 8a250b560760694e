package policy

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"sluice/msg"
)

// DefaultDetached is the detached limit of a file that sets none: a day
// covers a laptop closed overnight, or a job started in the evening and
// looked at next morning, and keeps abandoned shells (root ones among
// them) from piling up for weeks behind the per-user session cap.
const DefaultDetached = 24 * time.Hour

// MaxLimit bounds any limit that is set: longer is a typo, not a policy.
const MaxLimit = 366 * 24 * time.Hour

// Limit is one limit as written: Set when a line gave it; D 0 is "none".
type Limit struct {
	Set  bool
	D    time.Duration
	Text string // as written, for String
}

// RuleLimits are the limits a rule or the file's limit lines set.
type RuleLimits struct {
	Idle, Detached, Max Limit
}

// The limit names, as written in the file.
const (
	LimitIdle     = "idle"
	LimitDetached = "detached"
	LimitMax      = "max"
)

func isLimitName(s string) bool {
	return s == LimitIdle || s == LimitDetached || s == LimitMax
}

func (l *RuleLimits) field(name string) *Limit {
	switch name {
	case LimitIdle:
		return &l.Idle
	case LimitDetached:
		return &l.Detached
	case LimitMax:
		return &l.Max
	}
	return nil
}

// set parses one limit; a limit set twice on a rule is an error, since
// the reader would have to guess which counts.
func (l *RuleLimits) set(name, value string) error {
	f := l.field(name)
	if f == nil {
		return fmt.Errorf("unknown limit %q; want idle, detached or max", name)
	}
	if f.Set {
		return fmt.Errorf("limit %s set twice", name)
	}
	d, err := ParseLimit(value)
	if err != nil {
		return fmt.Errorf("%s %q: %v", name, value, err)
	}
	*f = Limit{Set: true, D: d, Text: value}
	return nil
}

// String is the rule's limits as written, each with a leading space.
func (l RuleLimits) String() string {
	s := ""
	for _, c := range []struct {
		name string
		l    Limit
	}{{LimitIdle, l.Idle}, {LimitDetached, l.Detached}, {LimitMax, l.Max}} {
		if c.l.Set {
			s += " " + c.name + " " + c.l.Text
		}
	}
	return s
}

// ParseLimit reads a duration as the file writes it: "none", or one or
// more of a decimal number and a unit s, m, h or d ("90s", "1h30m",
// "2d"), from 1s to MaxLimit. "none" is 0.
func ParseLimit(s string) (time.Duration, error) {
	if s == "none" {
		return 0, nil
	}
	if s == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for rest := s; rest != ""; {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) || i > 6 {
			return 0, errors.New(`want "none" or a number and a unit s, m, h or d, as in 90s, 1h30m, 2d`)
		}
		n, _ := strconv.Atoi(rest[:i]) // at most 6 digits
		unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[rest[i]]
		if unit == 0 {
			return 0, fmt.Errorf("unknown unit %q; want s, m, h or d", rest[i:i+1])
		}
		// Compared before multiplying: 999999d would overflow.
		if time.Duration(n) > MaxLimit/unit || total+time.Duration(n)*unit > MaxLimit {
			return 0, fmt.Errorf("longer than %d days; write none for no limit", MaxLimit/(24*time.Hour))
		}
		total += time.Duration(n) * unit
		rest = rest[i+1:]
	}
	if total < time.Second {
		return 0, errors.New("shorter than 1s; write none for no limit")
	}
	return total, nil
}

// limit NAME DURATION: the file's default for NAME, at most once each.
func (p *Policy) parseLimit(f []string, n int, fail func(string, ...any) error) error {
	if len(f) != 3 || !isLimitName(f[1]) {
		return fail("want: limit idle|detached|max DURATION")
	}
	if first := p.limitLines[f[1]]; first != 0 {
		return fail("limit %s set twice (first on line %d)", f[1], first)
	}
	if err := p.Limits.set(f[1], f[2]); err != nil {
		return fail("%v", err)
	}
	p.limitLines[f[1]] = n
	return nil
}

// LimitsFor are the limits of a session rule allows: each the rule's own
// if it sets it, else the file's limit line, else the default (no idle
// limit, DefaultDetached, no maximum).
func (p *Policy) LimitsFor(rule *Rule) msg.Limits {
	pick := func(r, file Limit, def time.Duration) int64 {
		switch {
		case r.Set:
			return r.D.Milliseconds()
		case file.Set:
			return file.D.Milliseconds()
		}
		return def.Milliseconds()
	}
	var r RuleLimits
	if rule != nil {
		r = rule.Limits
	}
	return msg.Limits{
		Idle:     pick(r.Idle, p.Limits.Idle, 0),
		Detached: pick(r.Detached, p.Limits.Detached, DefaultDetached),
		Max:      pick(r.Max, p.Limits.Max, 0),
	}
}

// LimitsText describes the file's defaults as a session a rule without
// limits of its own gets them: "idle none, detached 1d, max 12h".
func (p *Policy) LimitsText() string {
	l := p.LimitsFor(nil)
	f := func(ms int64) string {
		if ms == 0 {
			return "none"
		}
		return (time.Duration(ms) * time.Millisecond).String()
	}
	return fmt.Sprintf("idle %s, detached %s, max %s", f(l.Idle), f(l.Detached), f(l.Max))
}
