package hub

// DetachPolicy detaches every viewer but auditors, because the policy no
// longer allows the session (on-revoke detach); each one's next Poll
// reports why (Event.Detached) and nothing follows. Auditors stay: their
// view is granted by the file's audit lines, not by the owner's rule, and
// a session the policy detached is still a running shell to audit. It
// returns how many viewers it detached; Stats().Viewers says whether any
// remain.
func (s *Session) DetachPolicy(why string) int {
	var out, others []*Viewer
	s.mu.Lock()
	kept := s.viewers[:0:0]
	for _, v := range s.viewers {
		if v.auditor {
			kept = append(kept, v)
			continue
		}
		v.detached, v.policyOut = true, why
		out = append(out, v)
	}
	s.viewers = kept
	if len(out) > 0 {
		others = s.wakeViewersLocked(nil, true) // the auditors' viewer lists
	}
	s.mu.Unlock()
	notify(others)
	for _, v := range out {
		v.notify()
	}
	if len(out) > 0 {
		s.kickReader()
	}
	return len(out)
}
