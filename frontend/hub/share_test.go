package hub

import (
	"errors"
	"strings"
	"testing"
)

// TestShareChangesApplyToAttached: each row attaches share viewers at
// some epochs, applies share changes (possibly out of order, as two tabs
// of the owner may), and checks what every viewer may do after.
func TestShareChangesApplyToAttached(t *testing.T) {
	type viewer struct {
		mode  string
		epoch uint32
	}
	type change struct {
		epoch uint32
		mode  string
	}
	tests := []struct {
		name    string
		viewers []viewer
		changes []change
		want    []string // mode after, "" for detached
	}{
		{"private detaches every share viewer",
			[]viewer{{ModeReadWrite, 1}, {ModeReadOnly, 1}},
			[]change{{2, ModePrivate}},
			[]string{"", ""}},
		{"read-only stops typing, keeps watching",
			[]viewer{{ModeReadWrite, 1}, {ModeReadOnly, 1}},
			[]change{{2, ModeReadOnly}},
			[]string{ModeReadOnly, ModeReadOnly}},
		{"read-write raises no one",
			[]viewer{{ModeReadOnly, 1}},
			[]change{{2, ModeReadWrite}},
			[]string{ModeReadOnly}},
		{"private then read-write again: old links stay out",
			[]viewer{{ModeReadWrite, 1}},
			[]change{{2, ModePrivate}, {3, ModeReadWrite}},
			[]string{""}},
		{"applied out of order",
			[]viewer{{ModeReadWrite, 1}, {ModeReadWrite, 3}},
			[]change{{3, ModeReadWrite}, {2, ModePrivate}},
			[]string{"", ModeReadWrite}},
		{"a change before a viewer's epoch leaves it alone",
			[]viewer{{ModeReadWrite, 4}},
			[]change{{3, ModeReadOnly}, {2, ModePrivate}},
			[]string{ModeReadWrite}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := New(Options{})
			defer h.Close()
			s, sl := rawPty(t, h, "s1")
			defer sl.Close()
			owner := s.Attach("alice", ModeOwner)
			var vs []*Viewer
			for _, v := range tc.viewers {
				j, err := s.Join(Join{User: "bob", Mode: v.mode, Shared: true, Epoch: v.epoch}, nil)
				if err != nil {
					t.Fatal(err)
				}
				vs = append(vs, j)
			}
			for _, c := range tc.changes {
				s.Share(c.epoch, c.mode, false)
			}
			for i, v := range vs {
				err := v.Input([]byte("x"))
				switch want := tc.want[i]; want {
				case "":
					if !errors.Is(err, ErrRevoked) {
						t.Errorf("viewer %d: input %v, want revoked", i, err)
					}
					ev, err := v.Poll(make([]byte, 64))
					if err != nil || !ev.Revoked {
						t.Errorf("viewer %d: poll %+v %v, want revoked", i, ev, err)
					}
					if _, err := v.Poll(make([]byte, 64)); !errors.Is(err, ErrDetached) {
						t.Errorf("viewer %d: second poll %v, want detached", i, err)
					}
				case ModeReadOnly:
					if !errors.Is(err, ErrReadOnly) || v.Mode() != ModeReadOnly {
						t.Errorf("viewer %d: input %v mode %s, want read-only", i, err, v.Mode())
					}
				default:
					if err != nil || v.Mode() != want {
						t.Errorf("viewer %d: input %v mode %s, want %s", i, err, v.Mode(), want)
					}
				}
			}
			// The owner is never touched, and the list shows who is left.
			if err := owner.Input([]byte("y")); err != nil {
				t.Errorf("owner input: %v", err)
			}
			left := 1
			for _, w := range tc.want {
				if w != "" {
					left++
				}
			}
			if got := len(s.Viewers()); got != left {
				t.Errorf("%d viewers listed, want %d", got, left)
			}
		})
	}
}

// TestShareLowersModeOnce: a lowered viewer's next Poll names its new
// mode, once.
func TestShareLowersModeOnce(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	s, sl := rawPty(t, h, "s1")
	defer sl.Close()
	v, err := s.Join(Join{User: "bob", Mode: ModeReadWrite, Shared: true, Epoch: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Poll(make([]byte, 64)) // the viewer list event of its own attach
	s.Share(2, ModeReadOnly, false)
	buf := make([]byte, 64)
	if ev, _ := v.Poll(buf); ev.Mode != ModeReadOnly {
		t.Fatalf("first poll after the change: %+v", ev)
	}
	if ev, _ := v.Poll(buf); ev.Mode != "" {
		t.Fatalf("second poll: %+v", ev)
	}
	if ok, _ := v.Ready(); ok {
		t.Fatal("ready with nothing to say")
	}
}

// TestJoinAfterShareRevoked: a viewer whose pty-get raced a change to
// private is refused here.
func TestJoinAfterShareRevoked(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	s, sl := rawPty(t, h, "s1")
	defer sl.Close()
	s.Share(1, ModeReadWrite, false)
	s.Share(2, ModePrivate, false)
	if _, err := s.Join(Join{User: "bob", Mode: ModeReadWrite, Shared: true, Epoch: 1}, nil); !errors.Is(err, ErrRevoked) {
		t.Fatalf("join with a token from before private: %v", err)
	}
}

// TestShareHistory: a viewer joining with a share token sees output from
// the share on, unless the owner included the history.
func TestShareHistory(t *testing.T) {
	tests := []struct {
		name    string
		history bool
		want    string
	}{
		{"without history", false, "after-share\n"},
		{"with history", true, "before-share\nafter-share\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := New(Options{})
			defer h.Close()
			s, sl := rawPty(t, h, "s1")
			defer sl.Close()
			ctx := ctx(t)
			owner := &collector{v: s.Attach("alice", ModeOwner)}
			sl.Write([]byte("before-share\n"))
			owner.until(t, ctx, "before-share\n")
			s.Share(1, ModeReadOnly, tc.history)
			sl.Write([]byte("after-share\n"))
			owner.until(t, ctx, "after-share\n")
			v, err := s.Join(Join{User: "bob", Mode: ModeReadOnly, Shared: true, Epoch: 1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			c := &collector{v: v}
			c.until(t, ctx, "after-share\n")
			if got := c.out.String(); got != tc.want {
				t.Fatalf("viewer got %q, want %q", got, tc.want)
			}
			// The owner, reattaching, still gets the whole scrollback.
			o2 := &collector{v: s.Attach("alice", ModeOwner)}
			o2.until(t, ctx, "after-share\n")
			if !strings.Contains(o2.out.String(), "before-share") {
				t.Fatalf("owner's reattach lost the scrollback: %q", o2.out.String())
			}
		})
	}
}
