package ptystore

import (
	"context"
	"slices"
	"testing"
)

// TestViewersReportPolicyDetach: the answer to pty-viewers names the
// reported sessions a recheck detached (on-revoke detach), only those,
// until the policy allows them again, whether a recheck or an owner's
// attach finds that out first. Before, the frontend had no way to learn
// it and pages streaming a detached session went on.
func TestViewersReportPolicyDetach(t *testing.T) {
	pf := newPolicyFile(t, bothAllowed)
	h := newHarnessPolicy(t, Config{}, pf.checker)
	shA, shB := startShell(t), startShell(t)
	h.put(shA, "a", "alice")
	h.put(shB, "b", "bob")
	recheck := func() {
		t.Helper()
		if _, err := h.handler.Recheck(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	detached := func(ids ...string) []string { return h.viewers(ids, nil).Detached }

	if got := detached("a", "b"); len(got) != 0 {
		t.Fatalf("detached while allowed: %v", got)
	}
	pf.write("on-revoke detach\nallow bob as u-bob on .host\n")
	if got := detached("a", "b"); len(got) != 0 {
		t.Fatalf("detached before any recheck: %v (the recheck decides)", got)
	}
	recheck()
	for _, c := range []struct {
		report []string
		want   []string
	}{
		{[]string{"a", "b"}, []string{"a"}},
		{[]string{"b"}, nil},                 // only what was reported
		{[]string{"zz", "a"}, []string{"a"}}, // unknown IDs are not named
		{nil, nil},
	} {
		if got := detached(c.report...); !slices.Equal(got, c.want) {
			t.Errorf("report %v: detached %v, want %v", c.report, got, c.want)
		}
	}
	if !shA.running() {
		t.Fatal("a detached session's shell ended")
	}

	// Allowed again: the owner's attach clears it at once.
	pf.write(bothAllowed)
	if _, _, code := h.get("a", h.grant("alice"), nil); code != "" {
		t.Fatalf("attach once allowed again: %q", code)
	}
	if got := detached("a", "b"); len(got) != 0 {
		t.Errorf("detached after an allowed attach: %v", got)
	}

	// And a recheck clears it without an attach.
	pf.write("on-revoke detach\nallow bob as u-bob on .host\n")
	recheck()
	if got := detached("a"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("detached after the second recheck: %v", got)
	}
	pf.write(bothAllowed)
	recheck()
	if got := detached("a", "b"); len(got) != 0 {
		t.Errorf("detached after a recheck that allows it: %v", got)
	}

	// on-revoke end marks nothing: the session is gone.
	pf.write("allow bob as u-bob on .host\n")
	recheck()
	h.waitDrop("a drop")
	if got := detached("a", "b"); len(got) != 0 {
		t.Errorf("detached under on-revoke end: %v", got)
	}
}
