package policy_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/policy"
	"sluice/internal/grant"
	"sluice/internal/optable"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

const auditPolicy = `group auditors erin frank
deny  mallory as * on *
allow alice as root on .host
audit carol
audit %auditors on web1
audit frank on .host
audit erin on web1
audit mallory on .host
`

func TestAuditGrammar(t *testing.T) {
	p, err := policy.Parse(strings.NewReader(auditPolicy), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range p.Audits {
		got = append(got, a.String())
	}
	want := []string{
		"audit carol on * (test.policy:4)",
		"audit %auditors on web1 (test.policy:5)",
		"audit frank on .host (test.policy:6)",
		"audit erin on web1 (test.policy:7)",
		"audit mallory on .host (test.policy:8)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("audits:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(p.Rules) != 2 {
		t.Errorf("audit lines changed the allow/deny rules: %v", p.Rules)
	}

	for _, tc := range []struct{ name, src, text string }{
		{"bare", "audit", "want: audit WHO [on MACHINE]"},
		{"as", "audit carol as root on .host", "want: audit WHO [on MACHINE]"},
		{"on without machine", "audit carol on", "want: audit WHO [on MACHINE]"},
		{"trailing word", "audit carol on web1 read-write", "want: audit WHO [on MACHINE]"},
		{"bad who", "audit Carol", `invalid sluice user "Carol"`},
		{"undefined group", "audit %ops", `group "ops" is not defined`},
		{"bad machine", "audit carol on web/1", `invalid machine "web/1"`},
		{"machine glob", "audit carol on web*", "invalid machine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.Parse(strings.NewReader(tc.src), "p")
			var pe *policy.ParseError
			if !errors.As(err, &pe) || pe.Line != 1 || !strings.Contains(pe.Msg, tc.text) {
				t.Fatalf("err %v, want line 1 mentioning %q", err, tc.text)
			}
		})
	}
}

func TestAuditScope(t *testing.T) {
	p, err := policy.Parse(strings.NewReader(auditPolicy), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user string
		want []string
	}{
		{"carol", []string{"*"}},
		{"erin", []string{"web1"}},           // the group's line and her own, once
		{"frank", []string{"web1", ".host"}}, // file order
		{"alice", nil},                       // a shell rule is no audit rule
		{"mallory", []string{".host"}},       // deny rules do not take auditing away
		{"bob", nil},
	} {
		got, rules := p.AuditScope(tc.user)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: scope %q, want %q", tc.user, got, tc.want)
		}
		if len(got) > 0 && len(rules) == 0 {
			t.Errorf("%s: no rules named", tc.user)
		}
		if ok, reason := p.MayAudit(tc.user); ok != (len(tc.want) > 0) || ok != (reason == "") {
			t.Errorf("%s: MayAudit %v %q", tc.user, ok, reason)
		}
	}
}

func auditCall(c *rpc.Client, g msg.Grant) (msg.AuditScopeReply, error) {
	var rep msg.AuditScopeReply
	args, err := msgpack.Marshal(msg.AuditScope{Grant: g})
	if err != nil {
		return rep, err
	}
	_, err = c.Call(context.Background(), msg.Request{Op: msg.OpAuditScope, Args: args}, nil, &rep)
	return rep, err
}

// TestAuditScopeOp: both of policy's protocols answer audit-scope, each
// from the grant only after it verifies and is not revoked.
func TestAuditScopeOp(t *testing.T) {
	f := setupPolicy(t, auditPolicy, nil)
	dir := t.TempDir()
	if err := revoke.Write(dir, revoke.List{}); err != nil {
		t.Fatal(err)
	}
	p, _ := policy.Parse(strings.NewReader(auditPolicy), "test.policy")
	me := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	h := &policy.Handler{Key: f.key, Policy: p, Revoked: revoke.NewChecker(dir), Log: slog.New(slog.DiscardHandler)}
	web, pty := checkServer(t, h, me, me)

	forged, expired, tampered, badName := f.badGrants(t)
	for _, c := range []struct {
		name  string
		grant msg.Grant
		code  string
		want  []string
	}{
		{"auditor", f.grant(t, "carol"), "", []string{"*"}},
		{"scoped auditor", f.grant(t, "frank"), "", []string{"web1", ".host"}},
		{"no audit rule", f.grant(t, "alice"), "", []string{}},
		{"forged", forged, msg.CodeBadGrant, nil},
		{"expired", expired, msg.CodeBadGrant, nil},
		{"tampered", tampered, msg.CodeBadGrant, nil},
		{"bad name", badName, msg.CodeBadGrant, nil},
	} {
		for proto, cl := range map[string]*rpc.Client{"web": web, "ptystore": pty} {
			rep, err := auditCall(cl, c.grant)
			if got := remoteCode(err); got != c.code {
				t.Errorf("%s over %s: code %q (%v), want %q", c.name, proto, got, err, c.code)
				continue
			}
			if err == nil && !slices.Equal(rep.Machines, c.want) {
				t.Errorf("%s over %s: machines %q, want %q", c.name, proto, rep.Machines, c.want)
			}
		}
	}

	// A revoked auditor audits nothing.
	cred := []byte{0xbe, 0xef}
	g, err := grant.SignCredential(f.key, "carol", cred, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auditCall(pty, g); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if err := revoke.Write(dir, revoke.List{Users: map[string]revoke.User{"carol": {Disabled: true}}}); err != nil {
		t.Fatal(err)
	}
	for proto, cl := range map[string]*rpc.Client{"web": web, "ptystore": pty} {
		if _, err := auditCall(cl, g); remoteCode(err) != msg.CodeBadGrant {
			t.Errorf("revoked auditor over %s: %v, want %s", proto, err, msg.CodeBadGrant)
		}
	}
	os.Remove(filepath.Join(dir, revoke.FileName))
	if _, err := auditCall(pty, f.grant(t, "carol")); remoteCode(err) != msg.CodeBadGrant {
		t.Errorf("no revocation list: %v, want %s", err, msg.CodeBadGrant)
	}
}

func checkAuditCall(c *rpc.Client, op string, g msg.Grant) (msg.CheckAuditReply, error) {
	var rep msg.CheckAuditReply
	args, err := msgpack.Marshal(msg.CheckAudit{Grant: g})
	if err != nil {
		return rep, err
	}
	_, err = c.Call(context.Background(), msg.Request{Op: op, Args: args}, nil, &rep)
	return rep, err
}

// TestCheckAuditOp: "record to policy" answers check-audit with the
// grant's audit scope, only after the grant verifies and is not revoked,
// and serves nothing else. Before, policy had no such route: the
// recording helper's every call was refused, so no auditor saw a
// recording.
func TestCheckAuditOp(t *testing.T) {
	f := setupPolicy(t, auditPolicy, nil)
	dir := t.TempDir()
	if err := revoke.Write(dir, revoke.List{}); err != nil {
		t.Fatal(err)
	}
	p, _ := policy.Parse(strings.NewReader(auditPolicy), "test.policy")
	h := &policy.Handler{Key: f.key, Policy: p, Revoked: revoke.NewChecker(dir), Log: slog.New(slog.DiscardHandler)}
	rec := listen(t, msg.ProtoRecordToPolicy, optable.HandlerOf(h.Tables(), msg.ProtoRecordToPolicy))

	forged, expired, tampered, badName := f.badGrants(t)
	for _, c := range []struct {
		name   string
		op     string
		grant  msg.Grant
		code   string
		allow  bool
		want   []string
		covers map[string]bool
	}{
		{"auditor", msg.OpCheckAudit, f.grant(t, "carol"), "", true, []string{"*"}, map[string]bool{"web1": true, ".host": true}},
		{"scoped auditor", msg.OpCheckAudit, f.grant(t, "erin"), "", true, []string{"web1"}, map[string]bool{"web1": true, ".host": false, "db": false}},
		{"no audit rule", msg.OpCheckAudit, f.grant(t, "alice"), "", false, nil, map[string]bool{".host": false}},
		{"forged", msg.OpCheckAudit, forged, msg.CodeBadGrant, false, nil, nil},
		{"expired", msg.OpCheckAudit, expired, msg.CodeBadGrant, false, nil, nil},
		{"tampered", msg.OpCheckAudit, tampered, msg.CodeBadGrant, false, nil, nil},
		{"bad name", msg.OpCheckAudit, badName, msg.CodeBadGrant, false, nil, nil},
		{"other op", msg.OpAuditScope, f.grant(t, "carol"), rpc.CodeBadRequest, false, nil, nil},
		{"create over record", msg.OpCreateShellSession, f.grant(t, "alice"), rpc.CodeBadRequest, false, nil, nil},
	} {
		rep, err := checkAuditCall(rec, c.op, c.grant)
		if got := remoteCode(err); got != c.code {
			t.Errorf("%s: code %q (%v), want %q", c.name, got, err, c.code)
			continue
		}
		if err != nil {
			continue
		}
		if rep.Allow != c.allow || !slices.Equal(rep.Machines, c.want) || !c.allow && rep.Reason == "" {
			t.Errorf("%s: %+v, want allow %v machines %q and a reason when not", c.name, rep, c.allow, c.want)
		}
		for m, want := range c.covers {
			if rep.Covers(m) != want {
				t.Errorf("%s: covers %s = %v", c.name, m, !want)
			}
		}
	}

	// A revoked auditor gets no scope.
	g, err := grant.SignCredential(f.key, "carol", []byte{0xbe, 0xef}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := checkAuditCall(rec, msg.OpCheckAudit, g); err != nil || !rep.Allow {
		t.Fatalf("before revocation: %+v %v", rep, err)
	}
	if err := revoke.Write(dir, revoke.List{Users: map[string]revoke.User{"carol": {Disabled: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := checkAuditCall(rec, msg.OpCheckAudit, g); remoteCode(err) != msg.CodeBadGrant {
		t.Errorf("revoked auditor: %v, want %s", err, msg.CodeBadGrant)
	}

	// The other protocols do not answer check-audit.
	web, pty := checkServer(t, h, rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}, rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}})
	for proto, cl := range map[string]*rpc.Client{"web": web, "ptystore": pty} {
		if _, err := checkAuditCall(cl, msg.OpCheckAudit, f.grant(t, "erin")); remoteCode(err) != rpc.CodeBadRequest {
			t.Errorf("check-audit over %s: %v, want %s", proto, err, rpc.CodeBadRequest)
		}
	}
}
