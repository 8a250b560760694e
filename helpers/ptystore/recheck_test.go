package ptystore

import (
	"context"
	"os"
	"path/filepath"
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
	"sluice/rpc/buildid"
	"sluice/rpc/rpctest"
)

// policyFile is a policy file the test rewrites, and a checker that asks a
// real policy handler over a real socket, which loads the file at each
// call as the helper does under Accept=yes.
type policyFile struct {
	t    testing.TB
	path string
}

func newPolicyFile(t testing.TB, text string) *policyFile {
	pf := &policyFile{t: t, path: filepath.Join(t.TempDir(), "policy")}
	pf.write(text)
	return pf
}

// write installs text as sluicectl policy apply does: a new file renamed
// over the old one.
func (pf *policyFile) write(text string) {
	pf.t.Helper()
	tmp := pf.path + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		pf.t.Fatal(err)
	}
	if err := os.Rename(tmp, pf.path); err != nil {
		pf.t.Fatal(err)
	}
}

func (pf *policyFile) checker(key grant.Key) PolicyChecker {
	t := pf.t
	p, _ := msg.Lookup(msg.ProtoPtyStoreToPolicy)
	client := rpc.Hello{Intent: msg.Intent(p, "client"), BuildID: strings.Repeat("e5", 32)}
	server := rpc.Hello{Intent: msg.Intent(p, "server"), BuildID: strings.Repeat("f6", 32)}
	path := filepath.Join(t.TempDir(), "policy.sock")
	pf.serve(path, 0o600, key, "", client, server, rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}})
	cl := &rpc.Client{Path: path, Hello: client, Expect: server}
	return func(ctx context.Context, a msg.CheckSessions) (msg.CheckSessionsReply, error) {
		var rep msg.CheckSessionsReply
		raw, err := msgpack.Marshal(a)
		if err != nil {
			return rep, err
		}
		_, err = cl.Call(ctx, msg.Request{Op: msg.OpCheckSessions, Args: raw}, nil, &rep)
		return rep, err
	}
}

// serve serves "ptystore to policy" at sock with the real policy handler,
// which loads pf at each call as the Accept=yes helper does, and checks
// revocations in revDir ("": none), for callers allow lets in.
func (pf *policyFile) serve(sock string, mode uint32, key grant.Key, revDir string, client, server rpc.Hello, allow rpc.Allow) {
	t := pf.t
	t.Helper()
	handle := func(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
		pol, err := policy.Load(pf.path)
		if err != nil {
			return rpc.Reply{}, err
		}
		h := &policy.Handler{Key: key, Policy: pol, Log: testLog(t)}
		if revDir != "" {
			h.Revoked = revoke.NewChecker(revDir)
		}
		return optable.HandlerOf(h.Tables(), msg.ProtoPtyStoreToPolicy)(ctx, c)
	}
	srv := &rpc.Server{Name: "policy", Log: testLog(t), Routes: []rpc.Route{
		{Client: client, Server: server, Allow: allow, Handle: handle}}}
	rpctest.Serve(t, srv, sock, os.FileMode(mode))
}

// The owners' sessions run as u-OWNER (sessionInfo).
const bothAllowed = `allow alice as u-alice on .host
allow bob as u-bob on .host
`

// TestAttachChecksPolicy: pty-get asks the policy as it is now, for the
// owner, and for a read-write viewer, who could type into the shell.
func TestAttachChecksPolicy(t *testing.T) {
	pf := newPolicyFile(t, bothAllowed)
	h := newHarnessPolicy(t, Config{}, pf.checker)
	h.put(startShell(t), "s1", "alice")
	alice, bob, carol := h.grant("alice"), h.grant("bob"), h.grant("carol")

	if _, _, code := h.get("s1", alice, nil); code != "" {
		t.Fatalf("owner's attach while allowed: %s", code)
	}
	var ro, rw msg.PtyShareReply
	if _, code := call(t, h.web, msg.OpPtyShare, msg.PtyShare{Grant: alice, ID: "s1", Mode: msg.ShareReadOnly}, nil, &ro); code != "" {
		t.Fatal(code)
	}
	// A read-only viewer needs no rule of their own.
	if _, rep, code := h.get("s1", carol, ro.Token); code != "" || rep.Mode != msg.ShareReadOnly {
		t.Fatalf("read-only viewer without a rule: %s %+v", code, rep)
	}
	if _, code := call(t, h.web, msg.OpPtyShare, msg.PtyShare{Grant: alice, ID: "s1", Mode: msg.ShareReadWrite}, nil, &rw); code != "" {
		t.Fatal(code)
	}
	// A read-write viewer types into a shell running as u-alice: only one
	// the policy lets be u-alice may.
	if _, _, code := h.get("s1", carol, rw.Token); code != msg.CodeDenied {
		t.Errorf("read-write viewer without a rule for u-alice: %q, want %s", code, msg.CodeDenied)
	}
	pf.write(bothAllowed + "allow carol as u-alice on .host\n")
	if _, rep, code := h.get("s1", carol, rw.Token); code != "" || rep.Mode != msg.ShareReadWrite {
		t.Errorf("read-write viewer with a rule: %q %+v", code, rep)
	}

	// The owner's rule goes: nobody attaches any more, owner or viewer.
	pf.write("allow bob as u-bob on .host\nallow carol as u-alice on .host\n")
	for _, c := range []struct {
		who   string
		g     msg.Grant
		token []byte
	}{{"owner", alice, nil}, {"read-write viewer", carol, rw.Token}} {
		if _, _, code := h.get("s1", c.g, c.token); code != msg.CodeDenied {
			t.Errorf("%s after the owner's rule went: %q, want %s", c.who, code, msg.CodeDenied)
		}
	}
	// A grant policy will not vouch for is refused there too.
	forged, _ := grant.Sign(grant.NewKey(), "alice", time.Now(), time.Hour)
	if _, _, code := h.get("s1", forged, nil); code != msg.CodeBadGrant {
		t.Errorf("forged grant: %q", code)
	}
	_ = bob
}

// TestRecheckEnds: after the file changes, a recheck ends the sessions it
// no longer allows (on-revoke end, the default) and keeps the rest.
func TestRecheckEnds(t *testing.T) {
	pf := newPolicyFile(t, bothAllowed)
	h := newHarnessPolicy(t, Config{}, pf.checker)
	shA, shB := startShell(t), startShell(t)
	h.put(shA, "a", "alice")
	h.put(shB, "b", "bob")
	rep, err := h.handler.Recheck(context.Background())
	if err != nil || rep.Checked != 2 || len(rep.Revoked) != 0 {
		t.Fatalf("recheck with nothing changed: %+v, %v", rep, err)
	}
	pf.write("allow bob as u-bob on .host\n")
	var rr msg.PtyRecheckReply
	if _, code := call(t, h.admin, msg.OpPtyRecheck, msg.PtyRecheck{}, nil, &rr); code != "" {
		t.Fatalf("admin recheck: %s", code)
	}
	if rr.Checked != 2 || len(rr.Revoked) != 1 || rr.Revoked[0].Session.ID != "a" || rr.Revoked[0].Action != msg.OnRevokeEnd || rr.Revoked[0].Err != "" {
		t.Fatalf("recheck: %+v", rr)
	}
	h.waitDrop("a drop")
	shA.exited(t)
	if got := h.adminList(); len(got) != 1 || got[0] != "b" {
		t.Errorf("left: %v, want [b]", got)
	}
	if !shB.running() {
		t.Error("bob's shell, still allowed, ended")
	}
	// The web protocol does not serve it.
	if _, code := call(t, h.web, msg.OpPtyRecheck, msg.PtyRecheck{}, nil, &rr); code != rpc.CodeBadRequest {
		t.Errorf("recheck over web to ptystore: %q", code)
	}
}

// TestRecheckDetaches: with on-revoke detach the shell goes on, attaches
// are refused, and come back when the policy allows the session again.
func TestRecheckDetaches(t *testing.T) {
	pf := newPolicyFile(t, bothAllowed)
	h := newHarnessPolicy(t, Config{}, pf.checker)
	sh := startShell(t)
	h.put(sh, "a", "alice")
	pf.write("on-revoke detach\nallow bob as u-bob on .host\n")
	rep, err := h.handler.Recheck(context.Background())
	if err != nil || len(rep.Revoked) != 1 || rep.Revoked[0].Action != msg.OnRevokeDetach {
		t.Fatalf("recheck: %+v, %v", rep, err)
	}
	if !sh.running() || len(h.adminList()) != 1 {
		t.Fatal("a detached session was ended")
	}
	if _, _, code := h.get("a", h.grant("alice"), nil); code != msg.CodeDenied {
		t.Errorf("attach to a detached session: %q", code)
	}
	pf.write(bothAllowed)
	f, _, code := h.get("a", h.grant("alice"), nil)
	if code != "" {
		t.Fatalf("attach once allowed again: %q", code)
	}
	converse(t, f)
}

// TestWatchPolicy: a changed file is noticed without being told, and the
// session it no longer allows is ended.
func TestWatchPolicy(t *testing.T) {
	pf := newPolicyFile(t, bothAllowed)
	h := newHarnessPolicy(t, Config{}, pf.checker)
	sh := startShell(t)
	h.put(sh, "a", "alice")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.handler.WatchPolicy(ctx, pf.path, 20*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(100 * time.Millisecond) // a few polls of an unchanged file
	if !sh.running() {
		t.Fatal("ended while allowed")
	}
	pf.write("allow bob as u-bob on .host\n")
	h.waitDrop("a drop")
	sh.exited(t)
}

// servePolicyFor serves "ptystore to policy" at sock for a ptystore binary
// started by a test (which asks policy on every attach), with the real
// policy handler and bothAllowed. The hellos come from the binary's
// manifest m: ptystore's own client entry, and a policy server entry
// servePolicyFor adds with a made-up ID, unless m has one (a stand-in
// binary's). Callers: uid 0 and nobody, as those tests run ptystore.
func servePolicyFor(t *testing.T, sock string, m *buildid.Manifest, key grant.Key) {
	t.Helper()
	p, _ := msg.Lookup(msg.ProtoPtyStoreToPolicy)
	ce, err := m.Lookup(msg.PtyStore, msg.Intent(p, "client"))
	if err != nil {
		t.Fatal(err)
	}
	server := rpc.Hello{Intent: msg.Intent(p, "server"), BuildID: strings.Repeat("f7", 32)}
	if se, err := m.Lookup(msg.Policy, server.Intent); err == nil {
		server.BuildID = se.BuildID
	} else {
		m.Entries = append(m.Entries, buildid.Entry{Component: msg.Policy, Protocol: p.Name, Role: "server", Intent: server.Intent, BuildID: server.BuildID})
	}
	newPolicyFile(t, bothAllowed).serve(sock, 0o666, key, "", rpc.Hello{Intent: ce.Intent, BuildID: ce.BuildID}, server,
		rpc.Allow{UIDs: []uint32{0, 65534}})
}
