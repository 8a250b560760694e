package hub

import "time"

// ViewerInfo describes a viewer for the "who is watching" list.
type ViewerInfo struct {
	User    string `json:"user"`
	Mode    string `json:"mode"`
	Lagging bool   `json:"lagging,omitempty"`
	// Auditor: watching as an auditor the policy names, not through the
	// owner's share; the owner's page says so.
	Auditor bool `json:"auditor,omitempty"`
}

func (s *Session) Viewers() []ViewerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ViewerInfo, 0, len(s.viewers))
	for _, v := range s.viewers {
		out = append(out, ViewerInfo{User: v.user, Mode: v.mode, Lagging: v.lagging, Auditor: v.auditor})
	}
	return out
}

// Attach adds a viewer that will first get the scrollback, then live
// output. Viewers that may type pace the reader; read-only ones do not.
func (s *Session) Attach(user, mode string) *Viewer { return s.AttachFunc(user, mode, nil) }

// AttachFunc is Attach for a viewer that is told rather than waits: ready
// is called (never with a lock of the hub's held, possibly on the pty
// reader's goroutine, so it must not block) whenever Poll may have
// something new. It lets a sender exist only while there is output, and
// lets an idle viewer's output go out without a hand-off to another
// goroutine.
func (s *Session) AttachFunc(user, mode string, ready func()) *Viewer {
	v, _ := s.Join(Join{User: user, Mode: mode}, ready)
	return v
}

// Join describes a viewer: who, in which mode, and whether through a
// share token (and that token's share epoch, from ptystore).
type Join struct {
	User   string
	Mode   string
	Shared bool
	Epoch  uint32
	// Auditor joins read-only whatever Mode says, and is listed as one.
	Auditor bool
}

// Join is AttachFunc for any viewer. One who came through a share token
// gets the mode that share changes since its token's epoch leave it
// (ErrRevoked if the session went private since), and starts where that
// share starts (see Share); anyone else starts at the scrollback.
func (s *Session) Join(j Join, ready func()) (*Viewer, error) {
	v := &Viewer{
		s:       s,
		user:    j.User,
		shared:  j.Shared,
		epoch:   j.Epoch,
		auditor: j.Auditor,
		wake:    make(chan struct{}, 1),
		ready:   ready,
	}
	s.mu.Lock()
	mode := j.Mode
	if j.Auditor {
		mode = ModeReadOnly
	}
	v.pos = s.ring.start()
	if j.Shared {
		mode = s.share.cap(j.Epoch, mode)
		if mode == "" {
			s.mu.Unlock()
			return nil, ErrRevoked
		}
		v.pos = max(v.pos, s.share.from(j.Epoch, s.ring.head))
	}
	v.mode, v.pacing = mode, mode != ModeReadOnly
	s.viewers = append(s.viewers, v)
	s.active.Store(time.Now().UnixNano())
	others := s.wakeViewersLocked(nil, true)
	s.mu.Unlock()
	notify(others)
	s.kickReader()
	return v, nil
}

// shareState is what the hub knows of the session's share changes, by
// ptystore's share epoch (bumped by each change of mode; a token names
// the epoch it was made at). Changes may be applied out of order (two
// tabs of the owner), so it keeps the latest epoch of each kind rather
// than a sequence.
type shareState struct {
	known      bool   // a change has been applied since the hub took the session
	epoch      uint32 // the latest epoch applied
	privateAt  uint32 // the latest epoch at which sharing was set private
	readOnlyAt uint32 // the latest epoch at which it was set read-only
	start      int64  // ring offset where the latest epoch's viewers start
}

// cap is the mode a viewer with a token of epoch e and mode may have
// now: none ("") when the session went private after e, read-only when it
// went read-only after e. A share never gives an attached viewer more
// than its token did.
func (st *shareState) cap(e uint32, mode string) string {
	switch {
	case st.privateAt > e:
		return ""
	case st.readOnlyAt > e:
		return ModeReadOnly
	}
	return mode
}

// from is where a viewer joining with a token of epoch e starts. Without
// a change applied, every byte in the ring came after the share (the hub
// took the session after it); a token of an epoch the hub has not applied
// yet, or an older one, gets nothing from before.
func (st *shareState) from(e uint32, head int64) int64 {
	switch {
	case !st.known:
		return 0
	case e == st.epoch:
		return st.start
	}
	return head
}

// Share applies a change of the session's sharing that ptystore has made
// (epoch is its share epoch after the change). Viewers who came through a
// token of an earlier epoch are detached when mode is private (their next
// Poll says why), and can no longer type when it is read-only; nobody's
// mode is raised. Viewers joining with a token of this epoch see the
// scrollback only when history is set, otherwise only output from now on.
func (s *Session) Share(epoch uint32, mode string, history bool) {
	s.mu.Lock()
	st := &s.share
	switch mode {
	case ModePrivate:
		st.privateAt = max(st.privateAt, epoch)
	case ModeReadOnly:
		st.readOnlyAt = max(st.readOnlyAt, epoch)
	}
	if !st.known || epoch >= st.epoch {
		st.known, st.epoch = true, epoch
		st.start = s.ring.head
		if history {
			st.start = 0
		}
	}
	var changed []*Viewer
	kept := s.viewers[:0]
	for _, v := range s.viewers {
		if !v.shared {
			kept = append(kept, v)
			continue
		}
		switch m := st.cap(v.epoch, v.mode); {
		case m == "":
			v.detached, v.revoked = true, true
			changed = append(changed, v)
			continue
		case m != v.mode:
			v.mode, v.pacing, v.lagging, v.modeDirty = m, false, false, true
			changed = append(changed, v)
		}
		kept = append(kept, v)
	}
	clear(s.viewers[len(kept):])
	s.viewers = kept
	var others []*Viewer
	if len(changed) > 0 {
		others = s.wakeViewersLocked(nil, true)
	}
	s.mu.Unlock()
	notify(others)
	for _, v := range changed {
		if v.detached {
			v.notify()
		}
	}
	if len(changed) > 0 {
		s.kickReader()
	}
}
