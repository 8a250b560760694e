package policy_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/policy"
	"sluice/msg"
	"sluice/rpc"
)

const targetsPolicy = `group ops carol dave
group web erin carol
deny  mallory as * on *
allow alice as root on .host
allow alice as root on .host                       # listed once
allow alice as nobody on .host command /bin/sh -i  # a command, not a login shell
allow %ops as root on web1
deny  %web as root on *
allow %web as root on web2                         # shadowed by the deny above
allow * as = on .host
deny  * as = on db1
allow * as = on db1                                # shadowed: same account, same machine
deny  * as * on staging
allow * as postgres on staging                     # shadowed: the deny's account is "*"
deny  * as root on .host
allow * as * on .host                              # partly shadowed: listed, create decides
allow dave as * on *
allow mallory as mallory on .host                  # after mallory's deny-all
`

type tgt struct {
	account, machine string
	pattern          bool
	line             int
}

func targetsOf(p *policy.Policy, user string, max int) ([]tgt, bool) {
	ts, truncated := p.Targets(user, max)
	var out []tgt
	for _, t := range ts {
		out = append(out, tgt{t.Account, t.Machine, t.Pattern(), t.Rule.Line})
	}
	return out, truncated
}

func TestTargets(t *testing.T) {
	p, err := policy.Parse(strings.NewReader(targetsPolicy), "p")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user string
		want []tgt
	}{
		{"alice", []tgt{
			{"root", ".host", false, 4},
			{"alice", ".host", false, 10},
			{"*", ".host", true, 16},
		}},
		// In a group: the group's rule; in two, a deny from one shadows
		// the other's allow.
		{"carol", []tgt{
			{"root", "web1", false, 7},
			{"carol", ".host", false, 10},
			{"*", ".host", true, 16},
		}},
		{"dave", []tgt{
			{"root", "web1", false, 7},
			{"dave", ".host", false, 10},
			{"*", ".host", true, 16},
			{"*", "*", true, 17},
		}},
		{"erin", []tgt{
			{"erin", ".host", false, 10},
			{"*", ".host", true, 16},
		}},
		// Named in no rule of their own: what "*" offers.
		{"zed", []tgt{
			{"zed", ".host", false, 10},
			{"*", ".host", true, 16},
		}},
		{"mallory", nil},
		// Not a name a grant can carry: "=" must not turn into anything.
		{"*", nil},
		{"", nil},
	} {
		t.Run(tc.user, func(t *testing.T) {
			got, truncated := targetsOf(p, tc.user, 0)
			if truncated {
				t.Error("truncated without a bound")
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("targets\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestTargetsDefaultDeny(t *testing.T) {
	for _, text := range []string{
		"",
		"# nothing allowed\n",
		"allow bob as root on .host\n",
		"allow alice as root on .host command /usr/bin/uptime\n",
		"deny alice as * on *\nallow alice as root on .host\n",
		"group ops bob\nallow %ops as root on .host\n",
	} {
		p, err := policy.Parse(strings.NewReader(text), "p")
		if err != nil {
			t.Fatal(err)
		}
		if got, truncated := targetsOf(p, "alice", 0); len(got) != 0 || truncated {
			t.Errorf("%q: alice offered %v (truncated %v), want nothing", text, got, truncated)
		}
	}
}

func TestTargetsCap(t *testing.T) {
	for _, tc := range []struct {
		rules, max, want int
		truncated        bool
	}{
		{10, 0, 10, false},
		{256, 256, 256, false},
		{257, 256, 256, true},
		{policy.MaxRules, 256, 256, true},
		// Duplicates and denies are not counted against the bound.
		{-600, 256, 150, false},
	} {
		t.Run(fmt.Sprint(tc.rules, "/", tc.max), func(t *testing.T) {
			var b strings.Builder
			if tc.rules < 0 {
				// Each target twice, every other one denied first.
				for i := range -tc.rules / 2 {
					if i%2 == 0 {
						fmt.Fprintf(&b, "deny alice as u%d on .host\n", i)
					}
					fmt.Fprintf(&b, "allow alice as u%d on .host\nallow * as u%d on .host\n", i, i)
				}
			} else {
				for i := range tc.rules {
					fmt.Fprintf(&b, "allow alice as u%d on m%d\n", i, i)
				}
			}
			p, err := policy.Parse(strings.NewReader(b.String()), "p")
			if err != nil {
				t.Fatal(err)
			}
			got, truncated := targetsOf(p, "alice", tc.max)
			if len(got) != tc.want || truncated != tc.truncated {
				t.Fatalf("%d targets, truncated %v; want %d, %v", len(got), truncated, tc.want, tc.truncated)
			}
			// The first ones, in rule order.
			if tc.rules > 0 && (got[0].account != "u0" || got[len(got)-1].account != fmt.Sprintf("u%d", tc.want-1)) {
				t.Fatalf("not the first targets in rule order: %v ... %v", got[0], got[len(got)-1])
			}
		})
	}
}

// TestTargetsAgreeWithDecide checks the promise Targets makes against
// Decide, on many random policies: every exact target listed is allowed;
// every pattern listed allows a name no rule mentions where it has "*"
// (so nothing listed is unreachable); and every login shell Decide allows
// is covered by a listed target.
func TestTargetsAgreeWithDecide(t *testing.T) {
	const fresh = "fresh" // a name no generated rule mentions
	users := []string{"alice", "bob", "carol", "dave"}
	accounts := []string{"root", "alice", "bob", "nobody", fresh}
	machines := []string{".host", "web1", "web2", fresh}
	pick := func(r *rand.Rand, s ...string) string { return s[r.IntN(len(s))] }
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 3000 {
		var b strings.Builder
		b.WriteString("group ops alice carol\ngroup dev bob carol\n")
		for range 1 + r.IntN(8) {
			verb := pick(r, "allow", "deny")
			fmt.Fprintf(&b, "%s %s as %s on %s", verb,
				pick(r, "*", "alice", "bob", "carol", "%ops", "%dev"),
				pick(r, "*", "=", "=", "root", "alice", "nobody"),
				pick(r, "*", ".host", "web1"))
			if verb == "allow" && r.IntN(6) == 0 {
				b.WriteString(" command /bin/true")
			}
			b.WriteString("\n")
		}
		p, err := policy.Parse(strings.NewReader(b.String()), "p")
		if err != nil {
			t.Fatalf("generated policy does not parse: %v\n%s", err, b.String())
		}
		for _, u := range users {
			ts, truncated := p.Targets(u, 0)
			if truncated {
				t.Fatal("truncated without a bound")
			}
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("policy %d, user %s, targets %v: %s\n%s", n, u, ts, fmt.Sprintf(format, args...), b.String())
			}
			inst := func(s string) string {
				if s == policy.Any {
					return fresh
				}
				return s
			}
			for _, tg := range ts {
				req := policy.Request{User: u, UnixUser: inst(tg.Account), Machine: inst(tg.Machine)}
				if !p.Decide(req).Allow {
					fail("listed %+v, but %s on %s is denied", tg, req.UnixUser, req.Machine)
				}
				if !tg.Rule.Allow || tg.Rule.Command != nil {
					fail("listed from rule %v", tg.Rule)
				}
			}
			for _, a := range accounts {
				for _, m := range machines {
					if !p.Decide(policy.Request{User: u, UnixUser: a, Machine: m}).Allow {
						continue
					}
					covered := false
					for _, tg := range ts {
						if (tg.Account == policy.Any || tg.Account == a) && (tg.Machine == policy.Any || tg.Machine == m) {
							covered = true
						}
					}
					if !covered {
						fail("%s on %s is allowed, and no target covers it", a, m)
					}
				}
			}
		}
	}
}

func (f *fixture) targets(t *testing.T, g msg.Grant) (msg.AllowedTargetsReply, error) {
	t.Helper()
	args, err := msgpack.Marshal(msg.AllowedTargets{Grant: g})
	if err != nil {
		t.Fatal(err)
	}
	var rep msg.AllowedTargetsReply
	fds, err := f.web.Call(context.Background(), msg.Request{Op: msg.OpAllowedTargets, Args: args}, nil, &rep)
	if len(fds) != 0 {
		t.Errorf("%d fds with allowed-targets", len(fds))
	}
	return rep, err
}

// Over the policy socket, as the frontend asks: the grant's user's
// targets, the command rule left out, and a log line.
func TestHandlerTargets(t *testing.T) {
	f := setup(t, nil)
	for _, tc := range []struct {
		user string
		want []msg.Target
		log  []string
	}{
		{"alice", []msg.Target{{User: "root", Machine: ".host"}, {User: "root", Machine: "web1"}},
			[]string{"policy: allowed targets", "user=alice", "targets=2", "truncated=false"}},
		{"bob", nil, []string{"policy: allowed targets", "user=bob", "targets=0"}},
	} {
		t.Run(tc.user, func(t *testing.T) {
			f.logs.Reset()
			rep, err := f.targets(t, f.grant(t, tc.user))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(rep.Targets) != fmt.Sprint(tc.want) || rep.Truncated {
				t.Fatalf("reply %+v, want %v", rep, tc.want)
			}
			for _, want := range tc.log {
				if !strings.Contains(f.logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, f.logs)
				}
			}
		})
	}
}

// The grant is checked exactly as create-shell-session checks it.
func TestHandlerTargetsBadGrant(t *testing.T) {
	f := setup(t, nil)
	forged, expired, tampered, badName := f.badGrants(t)
	for _, tc := range []struct {
		name string
		g    msg.Grant
		text string
		log  string
	}{
		{"forged", forged, "grant not valid", "policy: bad grant"},
		{"tampered", tampered, "grant not valid", "policy: bad grant"},
		{"expired", expired, "expired", "policy: bad grant"},
		{"none", msg.Grant{}, "grant not valid", "policy: bad grant"},
		{"invalid user name", badName, "invalid user name", "policy: grant for an invalid user name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.logs.Reset()
			rep, err := f.targets(t, tc.g)
			if rpc.CodeOf(err) != msg.CodeBadGrant || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v, reply %+v; want bad-grant mentioning %q", err, rep, tc.text)
			}
			if logs := f.logs.String(); !strings.Contains(logs, tc.log) || !strings.Contains(logs, "op=allowed-targets") ||
				strings.Contains(logs, "policy: allowed targets") {
				t.Errorf("log:\n%s", logs)
			}
		})
	}
	t.Run("undecodable args", func(t *testing.T) {
		_, err := f.web.Call(context.Background(), msg.Request{Op: msg.OpAllowedTargets, Args: []byte{0xc1}}, nil, nil)
		if rpc.CodeOf(err) != rpc.CodeBadRequest {
			t.Fatalf("err %v", err)
		}
	})
}

// A policy as long as a policy may be, of names as long as names may be,
// still answers in a bounded frame: the first MaxTargets, and Truncated.
func TestHandlerTargetsBounded(t *testing.T) {
	var b strings.Builder
	for i := range policy.MaxRules {
		fmt.Fprintf(&b, "allow * as %s on %s\n", long(i), long(i))
	}
	f := setupPolicy(t, b.String(), nil)
	rep, err := f.targets(t, f.grant(t, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != msg.MaxTargets || !rep.Truncated || rep.Targets[0].User != long(0) ||
		rep.Targets[msg.MaxTargets-1].Machine != long(msg.MaxTargets-1) {
		t.Fatalf("%d targets, truncated %v", len(rep.Targets), rep.Truncated)
	}
	enc, err := msgpack.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) > 40<<10 {
		t.Fatalf("a full reply is %d bytes, more than msg.MaxTargets promises", len(enc))
	}
	if !strings.Contains(f.logs.String(), "truncated=true") {
		t.Errorf("log:\n%s", f.logs)
	}
}

// long is a 64-byte name (names.MaxLen), valid as an account and as a
// machine, different for each i.
func long(i int) string {
	s := fmt.Sprintf("n%d-", i)
	return s + strings.Repeat("x", 64-len(s))
}

// TestTargetsDocExample: what docs/policy.md says its example offers.
func TestTargetsDocExample(t *testing.T) {
	const example = `group ops carol dave
deny  mallory as * on *
allow alice   as alice on .host
allow %ops    as root on web1
allow *       as = on .host
allow bob     as root on .host command /usr/bin/systemctl status nginx
`
	p, err := policy.Parse(strings.NewReader(example), "p")
	if err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{
		"alice":   "[{alice .host false 3}]",
		"carol":   "[{root web1 false 4} {carol .host false 5}]",
		"bob":     "[{bob .host false 5}]",
		"mallory": "[]",
	} {
		got, _ := targetsOf(p, user, 0)
		if fmt.Sprint(got) != want {
			t.Errorf("%s: %v, want %s", user, got, want)
		}
	}
}
