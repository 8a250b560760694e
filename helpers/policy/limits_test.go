package policy_test

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"sluice/helpers/policy"
	"sluice/internal/grant"
	"sluice/msg"
	"sluice/rpc"
)

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"none", 0, ""},
		{"1s", time.Second, ""},
		{"90s", 90 * time.Second, ""},
		{"15m", 15 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"2d", 48 * time.Hour, ""},
		{"366d", policy.MaxLimit, ""},
		{"367d", 0, "longer than 366 days"},
		{"999999d", 0, "longer than"},
		{"0s", 0, "shorter than 1s"},
		{"", 0, "empty"},
		{"15", 0, "a number and a unit"},
		{"m", 0, "a number and a unit"},
		{"1.5h", 0, `unknown unit "."`},
		{"10w", 0, `unknown unit "w"`},
		{"-5m", 0, "a number and a unit"},
		{"1234567s", 0, "a number and a unit"},
		{"forever", 0, "a number and a unit"},
	} {
		got, err := policy.ParseLimit(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v, %v; want an error mentioning %q", tc.in, got, err, tc.err)
		}
	}
}

// TestLimitsFor: a rule's own limit overrides the file's limit line, which
// overrides the default (no idle limit, a day detached, no maximum).
func TestLimitsFor(t *testing.T) {
	src := `limit idle 30m
limit max 12h
allow alice as alice on .host
allow bob as bob on .host idle none detached 10m
allow carol as carol on .host max 1h command /usr/bin/top
allow dave as dave on .host idle 5m max none detached 2d
deny  mallory as * on *
`
	p, err := policy.Parse(strings.NewReader(src), "limits")
	if err != nil {
		t.Fatal(err)
	}
	const (
		m = int64(time.Minute / time.Millisecond)
		h = 60 * m
	)
	for _, tc := range []struct {
		user string
		args []string
		want msg.Limits
	}{
		{"alice", nil, msg.Limits{Idle: 30 * m, Detached: 24 * h, Max: 12 * h}},
		{"bob", nil, msg.Limits{Detached: 10 * m, Max: 12 * h}},
		{"carol", []string{"/usr/bin/top"}, msg.Limits{Idle: 30 * m, Detached: 24 * h, Max: 1 * h}},
		{"dave", nil, msg.Limits{Idle: 5 * m, Detached: 48 * h}},
	} {
		d := p.Decide(policy.Request{User: tc.user, UnixUser: tc.user, Machine: msg.HostMachine, Args: tc.args})
		if !d.Allow {
			t.Fatalf("%s: denied", tc.user)
		}
		if got := p.LimitsFor(d.Rule); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.user, got, tc.want)
		}
	}
	if got, want := p.Rules[1].String(), "allow bob as bob on .host idle none detached 10m (limits:4)"; got != want {
		t.Errorf("rule text %q, want %q", got, want)
	}
	if got, want := p.Rules[2].String(), "allow carol as carol on .host max 1h command /usr/bin/top (limits:5)"; got != want {
		t.Errorf("rule text %q, want %q", got, want)
	}

	// A file without limit lines: the defaults.
	p, err = policy.Parse(strings.NewReader("allow * as = on .host\n"), "bare")
	if err != nil {
		t.Fatal(err)
	}
	want := msg.Limits{Detached: policy.DefaultDetached.Milliseconds()}
	if got := p.LimitsFor(&p.Rules[0]); got != want {
		t.Errorf("defaults: %+v, want %+v", got, want)
	}
}

func TestParseLimitsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int
		text      string
	}{
		{"limit without value", "limit idle", 1, "want: limit idle|detached|max DURATION"},
		{"unknown limit", "limit lifetime 1h", 1, "want: limit idle|detached|max"},
		{"limit extra word", "limit idle 1h 2h", 1, "want: limit"},
		{"limit twice", "limit idle 1h\n# x\nlimit idle 2h", 3, "limit idle set twice (first on line 1)"},
		{"bad file duration", "limit max 12", 1, `max "12"`},
		{"zero", "limit detached 0s", 1, "shorter than 1s"},
		{"rule limit without value", "allow alice as alice on .host idle", 1, "idle without a duration"},
		{"rule limit twice", "allow alice as alice on .host idle 1h idle 2h", 1, "limit idle set twice"},
		{"rule bad duration", "allow alice as alice on .host max 10x", 1, `unknown unit "x"`},
		{"deny with limit", "deny alice as root on .host idle 5m", 1, "deny rules take no limits"},
		{"limit after command", "allow alice as root on .host command /bin/top idle 5m", -1, ""},
		{"unknown rule option", "allow alice as alice on .host lifetime 5m", 1, `unknown option "lifetime"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse(strings.NewReader(tc.src), "/etc/sluice/policy")
			if tc.line < 0 {
				// After command, everything is the command's argv.
				if err != nil || strings.Join(p.Rules[0].Command, " ") != "/bin/top idle 5m" || p.Rules[0].Limits.Idle.Set {
					t.Fatalf("%v %+v", err, p)
				}
				return
			}
			var pe *policy.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err %v is not a ParseError", err)
			}
			if pe.Line != tc.line || !strings.Contains(pe.Msg, tc.text) {
				t.Fatalf("err %q, want line %d mentioning %q", err, tc.line, tc.text)
			}
		})
	}
}

// TestCheckSessionsLimits: check-sessions' verdicts carry the allowing
// rule's limits, as the file is now; a refusal the file's defaults.
func TestCheckSessionsLimits(t *testing.T) {
	pol, err := policy.Parse(strings.NewReader("limit detached 5m\nallow alice as root on .host max 8h\n"), "limits")
	if err != nil {
		t.Fatal(err)
	}
	h := &policy.Handler{Key: grant.NewKey(), Policy: pol, Log: slog.New(slog.DiscardHandler)}
	me := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	_, pty := checkServer(t, h, me, me)
	rep, err := checkCall(pty, msg.CheckSessions{Sessions: []msg.SessionCheck{
		{ID: "s1", User: "alice", UnixUser: "root", Machine: msg.HostMachine},
		{ID: "s2", User: "bob", UnixUser: "root", Machine: msg.HostMachine},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := msg.Limits{Detached: (5 * time.Minute).Milliseconds(), Max: (8 * time.Hour).Milliseconds()}
	defaults := msg.Limits{Detached: (5 * time.Minute).Milliseconds()}
	if len(rep.Verdicts) != 2 || rep.Verdicts[0].Limits != want || rep.Verdicts[1].Limits != defaults {
		t.Fatalf("verdicts %+v, want alice's limits %+v and the file's %+v for bob", rep.Verdicts, want, defaults)
	}
}
