package ptystore

// A session the policy no longer allows, under "on-revoke detach", keeps
// its shell but loses its viewers. ptystore refuses every attach by asking
// policy (checkAttach); pages already streaming hold their own copy of
// the pty, so the frontend learns which of its sessions are detached from
// the answer to its pty-viewers report, sent every
// msg.PolicyDetachPollMs while it has viewers, and cuts them off. The mark
// is kept here so that answer costs a map lookup, not a policy call.

// setDetached marks or clears a session as detached by policy.
func (s *Store) setDetached(id string, detached bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if se := s.byID[id]; se != nil {
		se.detached = detached
	}
}

// Detached returns those of ids whose sessions the policy detached, in
// the order given.
func (s *Store) Detached(ids []string) []string {
	var out []string
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if se := s.byID[id]; se != nil && se.detached {
			out = append(out, id)
		}
	}
	return out
}
