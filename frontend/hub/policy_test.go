package hub

import (
	"errors"
	"testing"
)

// TestDetachPolicy: every viewer but auditors is detached with the reason,
// once, can no longer type, and the session (the shell) goes on for who
// joins later.
func TestDetachPolicy(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	s, sl := rawPty(t, h, "s1")
	defer sl.Close()
	owner := s.Attach("alice", ModeOwner)
	viewer, err := s.Join(Join{User: "bob", Mode: ModeReadWrite, Shared: true, Epoch: 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	aud, err := s.Join(Join{User: "carol", Auditor: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const why = "the policy no longer allows this session"
	if n := s.DetachPolicy(why); n != 2 {
		t.Fatalf("detached %d viewers, want 2", n)
	}
	buf := make([]byte, 64)
	for _, c := range []struct {
		who string
		v   *Viewer
	}{{"owner", owner}, {"viewer", viewer}} {
		ev, err := c.v.Poll(buf)
		if err != nil || ev.Detached != why || ev.Kicked != "" {
			t.Errorf("%s: first poll %+v, %v; want Detached %q", c.who, ev, err, why)
		}
		if _, err := c.v.Poll(buf); !errors.Is(err, ErrDetached) {
			t.Errorf("%s: second poll: %v, want ErrDetached", c.who, err)
		}
		if err := c.v.Input([]byte("x")); err == nil {
			t.Errorf("%s typed after the detach", c.who)
		}
	}
	if vs := s.Viewers(); len(vs) != 1 || !vs[0].Auditor {
		t.Errorf("viewers left %+v, want the auditor alone", vs)
	}
	if ev, err := aud.Poll(buf); err != nil || ev.Detached != "" {
		t.Errorf("auditor: %+v, %v", ev, err)
	}
	if n := s.DetachPolicy(why); n != 0 {
		t.Errorf("second detach took %d viewers", n)
	}
	again := s.Attach("alice", ModeOwner)
	if err := again.Input([]byte("echo\n")); err != nil {
		t.Errorf("a new attach after the detach cannot type: %v", err)
	}
	again.Detach()
	aud.Detach()
}
