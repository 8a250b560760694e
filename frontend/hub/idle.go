package hub

import "time"

// LastActive is when anyone last typed into the session or joined it (or
// the hub took it): what the idle limit counts from. A join counts so that
// someone who signs in again after an idle detach is not detached at once.
func (s *Session) LastActive() time.Time {
	return time.Unix(0, s.active.Load())
}

// DetachAll detaches every viewer; each one's next Poll reports why
// (Event.Kicked) and nothing follows. It returns how many there were.
func (s *Session) DetachAll(why string) int {
	s.mu.Lock()
	vs := s.viewers
	s.viewers = nil
	for _, v := range vs {
		v.detached, v.kicked = true, why
	}
	s.mu.Unlock()
	for _, v := range vs {
		v.notify()
	}
	if len(vs) > 0 {
		s.kickReader()
	}
	return len(vs)
}

// IDs lists the sessions the hub streams.
func (h *Hub) IDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.sessions))
	for id := range h.sessions {
		ids = append(ids, id)
	}
	return ids
}
