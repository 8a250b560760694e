package ptystore

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/internal/revoke"
	"sluice/msg"
)

// counted wraps a checker and counts the calls to the policy helper.
func counted(n *atomic.Int32, pc func(grant.Key) PolicyChecker) func(grant.Key) PolicyChecker {
	return func(k grant.Key) PolicyChecker {
		inner := pc(k)
		return func(ctx context.Context, a msg.CheckSessions) (msg.CheckSessionsReply, error) {
			n.Add(1)
			return inner(ctx, a)
		}
	}
}

// TestVerdictCache: an allow is reused only for the same question, on the
// same policy file, within the TTL; every change of the file, a new grant,
// a refusal, a recheck and the TTL send the next attach to policy again,
// and the grant's own checks (revocation) still run on every call.
func TestVerdictCache(t *testing.T) {
	pf := newPolicyFile(t, bothAllowed)
	var asked atomic.Int32
	h := newHarnessPolicy(t, Config{}, counted(&asked, pf.checker))
	clock := time.Now()
	h.handler.Now = func() time.Time { return clock }
	vc := &VerdictCache{Path: pf.path, TTL: 2 * time.Second}
	h.handler.Verdicts = vc
	revDir := t.TempDir()
	if err := revoke.Write(revDir, revoke.List{}); err != nil {
		t.Fatal(err)
	}
	h.handler.Revoked = revoke.NewChecker(revDir)
	sh := startShell(t)
	h.put(sh, "s1", "alice")
	alice := h.grant("alice")

	// attach is one pty-get; it returns its code and how often policy was asked.
	attach := func(g msg.Grant) (string, int32) {
		t.Helper()
		before := asked.Load()
		_, _, code := h.get("s1", g, nil)
		return code, asked.Load() - before
	}
	for _, step := range []struct {
		name   string
		before func()
		g      func() msg.Grant
		code   string
		asks   int32
	}{
		{"first attach", nil, nil, "", 1},
		{"again: the kept allow", nil, nil, "", 0},
		{"a new sign-in is a new question", nil, func() msg.Grant { return h.grant("alice") }, "", 1},
		{"the TTL is over", func() { clock = clock.Add(3 * time.Second) }, nil, "", 1},
		{"kept again", nil, nil, "", 0},
		// The attack a stale verdict would let through: the owner's rule
		// is gone and the next attach must be refused.
		{"the file replaced (rename)", func() { pf.write("allow bob as u-bob on .host\n") }, nil, msg.CodeDenied, 1},
		{"a refusal is not kept", nil, nil, msg.CodeDenied, 1},
		{"allowed again", func() { pf.write(bothAllowed) }, nil, "", 1},
		{"kept", nil, nil, "", 0},
		{"the file edited in place", func() {
			if err := os.WriteFile(pf.path, []byte("allow bob as u-bob on .host\n"+"#pad#pad#pad#pad#pad#pad#pad#p\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, nil, msg.CodeDenied, 1},
		{"allowed", func() { pf.write(bothAllowed) }, nil, "", 1},
		{"a recheck forgets", func() {
			if _, err := h.handler.Recheck(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, nil, "", 1},
		{"revoked: refused before the cache", func() {
			if err := revoke.Write(revDir, revoke.List{Users: map[string]revoke.User{"alice": {Disabled: true, NotBefore: clock.UnixMilli()}}}); err != nil {
				t.Fatal(err)
			}
		}, nil, msg.CodeBadGrant, 0},
	} {
		if step.before != nil {
			step.before()
		}
		g := alice
		if step.g != nil {
			g = step.g()
		}
		code, asks := attach(g)
		if code != step.code || asks != step.asks {
			t.Errorf("%s: code %q, policy asked %d times; want %q, %d", step.name, code, asks, step.code, step.asks)
		}
		if step.g != nil {
			alice = g // the new sign-in's grant is kept on
		}
	}
	if asked.Load() == 0 {
		t.Fatal("policy never asked")
	}
}

// TestVerdictCacheRacy: a file changed within Racy of its stat could
// change again without its identity showing it (coarse timestamps, an
// edit in place keeping the size), so no verdict on it is kept.
func TestVerdictCacheRacy(t *testing.T) {
	pf := newPolicyFile(t, bothAllowed)
	var asked atomic.Int32
	h := newHarnessPolicy(t, Config{}, counted(&asked, pf.checker))
	h.handler.Verdicts = &VerdictCache{Path: pf.path, TTL: time.Minute, Racy: time.Hour}
	h.put(startShell(t), "s1", "alice")
	g := h.grant("alice")
	before := asked.Load()
	for range 3 {
		if _, _, code := h.get("s1", g, nil); code != "" {
			t.Fatal(code)
		}
	}
	if n := asked.Load() - before; n != 3 {
		t.Errorf("policy asked %d times for 3 attaches to a freshly written file, want 3", n)
	}
}

// TestVerdictCacheBurst: attaches that arrive while policy is being asked
// the same question wait for that answer instead of each starting a
// policy process (tests/load: 1,000 concurrent pty-gets were 1,000
// sluice-policy starts). The policy call is held until every attach has
// asked or a moment has passed, so without the waiting all of them ask.
func TestVerdictCacheBurst(t *testing.T) {
	const n = 20
	pf := newPolicyFile(t, bothAllowed)
	var asked atomic.Int32
	gate := make(chan struct{})
	h := newHarnessPolicy(t, Config{}, func(k grant.Key) PolicyChecker {
		inner := pf.checker(k)
		return func(ctx context.Context, a msg.CheckSessions) (msg.CheckSessionsReply, error) {
			if asked.Add(1) == n {
				close(gate)
			}
			select {
			case <-gate:
			case <-time.After(300 * time.Millisecond):
			}
			return inner(ctx, a)
		}
	})
	h.handler.Verdicts = &VerdictCache{Path: pf.path, TTL: time.Minute}
	h.put(startShell(t), "s1", "alice")
	g := h.grant("alice")
	before := asked.Load()
	codes := make(chan string, n)
	for range n {
		go func() {
			var rep msg.PtyGetReply
			fds, code := call(t, h.web, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: "s1"}, nil, &rep)
			for _, f := range fds {
				f.Close()
			}
			codes <- code
		}()
	}
	for range n {
		if code := <-codes; code != "" {
			t.Errorf("attach in a burst: %q", code)
		}
	}
	if got := asked.Load() - before; got != 1 {
		t.Errorf("policy asked %d times for a burst of %d attaches to one session, want 1", got, n)
	}
}
