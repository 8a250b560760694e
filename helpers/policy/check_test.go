package policy_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/policy"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/rpctest"
)

const checkPolicy = `on-revoke detach
group ops carol
deny  mallory as * on *
allow alice as root on .host
allow %ops as root on web1
allow bob as root on .host command /usr/bin/systemctl status nginx
`

// checkServer serves h on both of policy's protocols on one socket, as
// the helper does, each with its own allowlist; it returns a client per
// protocol.
func checkServer(t *testing.T, h *policy.Handler, webAllow, ptyAllow rpc.Allow) (web, pty *rpc.Client) {
	t.Helper()
	w := rpctest.Route(msg.ProtoWebToPolicy, webAllow, 0, optable.HandlerOf(h.Tables(), msg.ProtoWebToPolicy))
	p := rpctest.Route(msg.ProtoPtyStoreToPolicy, ptyAllow, 0, optable.HandlerOf(h.Tables(), msg.ProtoPtyStoreToPolicy))
	path := rpctest.Serve(t, &rpc.Server{Name: "policy", Routes: []rpc.Route{w, p}}, "", 0)
	return rpctest.Client(path, w), rpctest.Client(path, p)
}

func checkCall(c *rpc.Client, a msg.CheckSessions) (msg.CheckSessionsReply, error) {
	var rep msg.CheckSessionsReply
	args, err := msgpack.Marshal(a)
	if err != nil {
		return rep, err
	}
	_, err = c.Call(context.Background(), msg.Request{Op: msg.OpCheckSessions, Args: args}, nil, &rep)
	return rep, err
}

func remoteCode(err error) string {
	var re *rpc.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

func TestCheckSessions(t *testing.T) {
	f := setupPolicy(t, checkPolicy, nil)
	p, err := policy.Parse(strings.NewReader(checkPolicy), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	me := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	_, pty := checkServer(t, &policy.Handler{Key: f.key, Policy: p, Log: slog.New(slog.DiscardHandler)}, me, me)
	entries := []msg.SessionCheck{
		{ID: "a", User: "alice", UnixUser: "root", Machine: ".host"},
		{ID: "b", User: "alice", UnixUser: "root", Machine: "web1"},
		{ID: "c", User: "carol", UnixUser: "root", Machine: "web1"},
		{ID: "d", User: "mallory", UnixUser: "root", Machine: ".host"},
		// a command rule allows no login shell, and a live session is judged as one
		{ID: "e", User: "bob", UnixUser: "root", Machine: ".host"},
	}
	rep, err := checkCall(pty, msg.CheckSessions{Sessions: entries})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OnRevoke != msg.OnRevokeDetach {
		t.Errorf("on-revoke %q, want %q from the file", rep.OnRevoke, msg.OnRevokeDetach)
	}
	want := map[string]bool{"a": true, "b": false, "c": true, "d": false, "e": false}
	if len(rep.Verdicts) != len(entries) {
		t.Fatalf("%d verdicts for %d entries", len(rep.Verdicts), len(entries))
	}
	for i, v := range rep.Verdicts {
		if v.ID != entries[i].ID || v.Allow != want[v.ID] {
			t.Errorf("verdict %d: %+v, want id %s allow %v", i, v, entries[i].ID, want[entries[i].ID])
		}
		if !v.Allow && !strings.Contains(v.Reason, "may not") {
			t.Errorf("verdict %s: reason %q", v.ID, v.Reason)
		}
	}
	if !strings.Contains(rep.Verdicts[3].Rule, "deny mallory") {
		t.Errorf("mallory's deciding rule %q", rep.Verdicts[3].Rule)
	}

	// With the grant of the one attaching: good, and each kind of bad.
	good := f.grant(t, "alice")
	forged, expired, tampered, badName := f.badGrants(t)
	for _, c := range []struct {
		name  string
		grant msg.Grant
		code  string
	}{
		{"good", good, ""},
		{"forged", forged, msg.CodeBadGrant},
		{"expired", expired, msg.CodeBadGrant},
		{"tampered", tampered, msg.CodeBadGrant},
		{"bad name", badName, msg.CodeBadGrant},
	} {
		g := c.grant
		rep, err := checkCall(pty, msg.CheckSessions{Grant: &g, Sessions: entries[:1]})
		if got := remoteCode(err); got != c.code {
			t.Errorf("%s grant: code %q (%v), want %q", c.name, got, err, c.code)
		}
		if err == nil && (len(rep.Verdicts) != 1 || !rep.Verdicts[0].Allow) {
			t.Errorf("%s grant: %+v", c.name, rep)
		}
	}

	bad := []msg.CheckSessions{
		{Sessions: []msg.SessionCheck{{User: "alice", UnixUser: "root\x1b]0;x", Machine: ".host"}}},
		{Sessions: []msg.SessionCheck{{User: "Alice", UnixUser: "root", Machine: ".host"}}},
		{Sessions: []msg.SessionCheck{{User: "alice", UnixUser: "root", Machine: "../x"}}},
		{Sessions: make([]msg.SessionCheck, msg.MaxCheckSessions+1)},
	}
	for i, a := range bad {
		if _, err := checkCall(pty, a); remoteCode(err) != rpc.CodeBadRequest {
			t.Errorf("bad request %d: %v, want %s", i, err, rpc.CodeBadRequest)
		}
	}
}

// TestCheckSessionsCallers: only the caller the route allows, by its
// kernel-reported uid, reaches check-sessions; the frontend's protocol
// does not serve it at all.
func TestCheckSessionsCallers(t *testing.T) {
	f := setupPolicy(t, checkPolicy, nil)
	p, _ := policy.Parse(strings.NewReader(checkPolicy), "test.policy")
	me := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	someoneElse := rpc.Allow{UIDs: []uint32{uint32(os.Getuid()) + 4242}}
	h := &policy.Handler{Key: f.key, Policy: p, Log: slog.New(slog.DiscardHandler)}
	web, pty := checkServer(t, h, me, someoneElse)
	a := msg.CheckSessions{Sessions: []msg.SessionCheck{{ID: "a", User: "alice", UnixUser: "root", Machine: ".host"}}}
	if _, err := checkCall(pty, a); remoteCode(err) != rpc.CodeForbidden {
		t.Errorf("a caller that is not ptystore: %v, want %s", err, rpc.CodeForbidden)
	}
	if _, err := checkCall(web, a); remoteCode(err) != rpc.CodeBadRequest {
		t.Errorf("check-sessions over web to policy: %v, want %s (unknown op)", err, rpc.CodeBadRequest)
	}
}

func TestOnRevokeGrammar(t *testing.T) {
	for _, c := range []struct {
		src, want, err string
	}{
		{"allow a as b on .host\n", msg.OnRevokeEnd, ""},
		{"on-revoke end\n", msg.OnRevokeEnd, ""},
		{"on-revoke detach # keep shells running\n", msg.OnRevokeDetach, ""},
		{"on-revoke\n", "", "x:1: want: on-revoke end|detach"},
		{"on-revoke kill\n", "", "x:1: want: on-revoke end|detach"},
		{"on-revoke end detach\n", "", "x:1: want: on-revoke end|detach"},
		{"on-revoke end\non-revoke detach\n", "", "x:2: on-revoke set twice (first on line 1)"},
	} {
		p, err := policy.Parse(strings.NewReader(c.src), "x")
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%q: err %v, want %q", c.src, err, c.err)
			}
			continue
		}
		if err != nil || p.OnRevoke != c.want {
			t.Errorf("%q: %v, %v; want %q", c.src, p, err, c.want)
		}
	}
}
