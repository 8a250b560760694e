package hub

import (
	"errors"
	"testing"
)

// TestAuditorReadOnly: an auditor is read-only whatever mode it asks for,
// is listed as an auditor to everyone attached, and a share change (the
// owner's, which gave the auditor nothing) does not detach it.
func TestAuditorReadOnly(t *testing.T) {
	for _, asked := range []string{ModeOwner, ModeReadWrite, ModeReadOnly, ""} {
		t.Run("asked "+asked, func(t *testing.T) {
			h := New(Options{})
			defer h.Close()
			s, sl := rawPty(t, h, "s1")
			defer sl.Close()
			owner := s.Attach("alice", ModeOwner)
			a, err := s.Join(Join{User: "carol", Mode: asked, Auditor: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a.Mode() != ModeReadOnly {
				t.Errorf("auditor mode %q", a.Mode())
			}
			if err := a.Input([]byte("x")); !errors.Is(err, ErrReadOnly) {
				t.Errorf("auditor input: %v, want ErrReadOnly", err)
			}
			if err := a.Resize(10, 10); err == nil {
				t.Error("auditor resized the pty")
			}
			vs := s.Viewers()
			if len(vs) != 2 || vs[0].Auditor || !vs[1].Auditor || vs[1].User != "carol" {
				t.Errorf("viewers %+v, want alice then carol as auditor", vs)
			}
			s.Share(2, ModePrivate, false)
			if a.Mode() != ModeReadOnly || len(s.Viewers()) != 2 {
				t.Errorf("a share change took the auditor away: %q %+v", a.Mode(), s.Viewers())
			}
			owner.Detach()
		})
	}
}
