package ptystore

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"sluice/msg"
	"sluice/rpc"
)

// enforce runs the limits loop for the test's life.
func (h *harness) enforce(every time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.handler.EnforceLimits(ctx, every); close(done) }()
	h.t.Cleanup(func() { cancel(); <-done })
}

func (h *harness) viewers(attached, left []string) msg.PtyViewersReply {
	h.t.Helper()
	var rep msg.PtyViewersReply
	if _, code := call(h.t, h.web, msg.OpPtyViewers, msg.PtyViewers{Attached: attached, Left: left}, nil, &rep); code != "" {
		h.t.Fatalf("pty-viewers: %s", code)
	}
	return rep
}

// dropWithin waits for the drop of want and returns how long it took
// from start.
func (h *harness) dropWithin(want string, start time.Time) time.Duration {
	h.t.Helper()
	h.waitDrop(want)
	return time.Since(start)
}

// TestMaxLength: a session is ended at its maximum length, from policy,
// whether or not anyone watches it, counted from ptystore's own clock
// (the frontend's Created is not taken).
func TestMaxLength(t *testing.T) {
	pf := newPolicyFile(t, "allow alice as u-alice on .host max 1s\nallow bob as u-bob on .host\n")
	h := newHarnessPolicy(t, Config{}, pf.checker)
	h.enforce(50 * time.Millisecond)
	shA, shB := startShell(t), startShell(t)

	info := sessionInfo("a", "alice")
	info.Created = time.Now().Add(24 * time.Hour).UnixMilli() // a frontend pushing the end away
	var rep msg.PtyPutReply
	start := time.Now()
	if _, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: info, Ticket: tk(t, h.key, info, shA.master)}, []*os.File{shA.master}, &rep); code != "" {
		t.Fatalf("put: %s", code)
	}
	shA.master.Close()
	if d := time.Since(time.UnixMilli(rep.Session.Created)); d < 0 || d > time.Minute {
		t.Errorf("Created %v from now: the caller's clock was taken", -d)
	}
	if want := (msg.Limits{Max: 1000, Detached: 24 * 3600 * 1000}); rep.Limits != want {
		t.Errorf("put reply limits %+v, want %+v", rep.Limits, want)
	}
	h.put(shB, "b", "bob")
	// Attached and watched all along: the maximum still bites.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				h.viewers([]string{"a", "b"}, nil)
			}
		}
	}()
	took := h.dropWithin("a "+ReasonMax, start)
	shA.exited(t)
	t.Logf("max length 1s: ended after %v", took)
	// Created is in milliseconds, truncated: the end may come up to 1 ms
	// before a second after the put's start.
	if took < time.Second-time.Millisecond {
		t.Errorf("ended after %v, before its maximum length", took)
	}
	if !shB.running() {
		t.Error("bob's session, without a maximum, ended")
	}
}

// TestDetachedLimit: a session the frontend says its last viewer left is
// ended after the detached limit; one with viewers, or attached again in
// time, is not.
func TestDetachedLimit(t *testing.T) {
	pf := newPolicyFile(t, "limit detached 1s\nallow alice as u-alice on .host\n")
	h := newHarnessPolicy(t, Config{}, pf.checker)
	h.enforce(50 * time.Millisecond)
	left, watched, back := startShell(t), startShell(t), startShell(t)
	h.put(left, "left", "alice")
	h.put(watched, "watched", "alice")
	h.put(back, "back", "alice")

	start := time.Now()
	if rep := h.viewers(nil, []string{"left", "back", "nosuch"}); rep.Unknown != 1 {
		t.Errorf("unknown ids: %d, want 1", rep.Unknown)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				h.viewers([]string{"watched"}, nil)
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	// The owner comes back: an attach is a viewer.
	if _, rep, code := h.get("back", h.grant("alice"), nil); code != "" || rep.Limits.Detached != 1000 {
		t.Fatalf("reattach: %q %+v", code, rep.Limits)
	}
	took := h.dropWithin("left "+ReasonDetached, start)
	left.exited(t)
	t.Logf("detached limit 1s: ended %v after the last viewer left", took)
	if took < time.Second {
		t.Errorf("ended after %v, before the detached limit", took)
	}
	time.Sleep(time.Second)
	if !watched.running() || !back.running() {
		t.Errorf("watched running %v, reattached running %v; want both", watched.running(), back.running())
	}
	if got := h.adminList(); strings.Join(got, " ") != "watched back" && strings.Join(got, " ") != "back watched" {
		t.Errorf("held: %v", got)
	}
}

// TestViewerLease: a frontend that stops reporting (it crashed, with
// every viewer) does not keep a session attached: after the lease it
// counts as detached since it was last reported.
func TestViewerLease(t *testing.T) {
	pf := newPolicyFile(t, "allow alice as u-alice on .host detached 1s\n")
	h := newHarnessPolicy(t, Config{ViewerLease: 300 * time.Millisecond}, pf.checker)
	h.enforce(50 * time.Millisecond)
	sh := startShell(t)
	start := time.Now()
	h.put(sh, "s1", "alice") // attached: the frontend that put it streams it
	took := h.dropWithin("s1 "+ReasonDetached, start)
	sh.exited(t)
	if took < time.Second {
		t.Errorf("ended after %v, before the detached limit", took)
	}
}

// TestLimitsLearnedLater: a session adopted after a restart (or put while
// policy was down) has no limits until policy is asked, which the limits
// loop does; then they bite.
func TestLimitsLearnedLater(t *testing.T) {
	pf := newPolicyFile(t, "allow alice as u-alice on .host max 1s\n")
	h := newHarnessPolicy(t, Config{}, pf.checker)
	sh := startShell(t)
	checker := h.handler.Policy
	h.handler.Policy = nil // policy not there at put
	h.put(sh, "s1", "alice")
	if _, known := h.store.Limits("s1"); known {
		t.Fatal("limits known without policy")
	}
	h.handler.Policy = checker
	h.enforce(50 * time.Millisecond)
	h.waitDrop("s1 " + ReasonMax)
	sh.exited(t)
}

func TestPtyViewersBounded(t *testing.T) {
	h := newHarness(t, Config{})
	ids := make([]string, msg.MaxPtyViewers+1)
	for i := range ids {
		ids[i] = "x"
	}
	if _, code := call(t, h.web, msg.OpPtyViewers, msg.PtyViewers{Attached: ids}, nil, nil); code != rpc.CodeBadRequest {
		t.Errorf("too many ids: %q, want %s", code, rpc.CodeBadRequest)
	}
	if _, code := call(t, h.admin, msg.OpPtyViewers, msg.PtyViewers{}, nil, nil); code != rpc.CodeForbidden {
		t.Errorf("over admin: %q, want %s", code, rpc.CodeForbidden)
	}
}
