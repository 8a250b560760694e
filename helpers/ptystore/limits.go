package ptystore

import (
	"context"
	"errors"
	"time"

	"sluice/msg"
)

// Reasons a session is ended by its limits, as logged and reported.
const (
	ReasonDetached = "detached limit"
	ReasonMax      = "max length"
)

// sessionLimits is what the store knows of a session's limits and of
// whether anyone watches it. Guarded by the store's lock.
type sessionLimits struct {
	known    bool       // limits came from policy
	limits   msg.Limits // valid when known
	asked    time.Time  // when policy was last asked for them, while unknown
	attached bool       // the frontend last said (or an attach showed) it has a viewer
	seen     time.Time  // when that was last said; see detachedSince
}

// detachedSince is when the session last had a viewer, and whether it has
// none now: the frontend said its last viewer left, or has not said it
// has one for a lease (the frontend may be gone, and with it every viewer).
func (l *sessionLimits) detachedSince(now time.Time, lease time.Duration) (time.Time, bool) {
	if l.attached && now.Sub(l.seen) <= lease {
		return time.Time{}, false
	}
	return l.seen, true
}

// SetLimits records a session's limits as policy gave them.
func (s *Store) SetLimits(id string, l msg.Limits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if se := s.byID[id]; se != nil {
		se.lim.known, se.lim.limits = true, l
	}
}

// Limits returns a session's limits and whether policy has given them.
func (s *Store) Limits(id string) (msg.Limits, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if se := s.byID[id]; se != nil {
		return se.lim.limits, se.lim.known
	}
	return msg.Limits{}, false
}

// Viewers records the frontend's report: attached sessions have a viewer
// now, left ones just lost their last. It returns how many IDs it does
// not hold.
func (s *Store) Viewers(attached, left []string) int {
	now := time.Now()
	unknown := 0
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ids := range []struct {
		ids      []string
		attached bool
	}{{left, false}, {attached, true}} {
		for _, id := range ids.ids {
			se := s.byID[id]
			if se == nil {
				unknown++
				continue
			}
			se.lim.attached, se.lim.seen = ids.attached, now
		}
	}
	return unknown
}

// dueEnd is a session its limits end now.
type dueEnd struct {
	id, reason string
	over       time.Duration // how long it has been over the limit
}

// due lists the sessions past a limit at now, and those whose limits are
// unknown and that policy was not asked about in the last retry.
func (s *Store) due(now time.Time, retry time.Duration) (ends []dueEnd, unknown []msg.SessionInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, se := range s.byID {
		l := &se.lim
		if !l.known {
			if now.Sub(l.asked) >= retry {
				l.asked = now
				unknown = append(unknown, se.info)
			}
			continue
		}
		if se.ending {
			continue
		}
		if m := l.limits.Max; m > 0 {
			end := time.UnixMilli(se.info.Created).Add(time.Duration(m) * time.Millisecond)
			if !now.Before(end) {
				ends = append(ends, dueEnd{se.info.ID, ReasonMax, now.Sub(end)})
				continue
			}
		}
		if d := l.limits.Detached; d > 0 {
			if since, ok := l.detachedSince(now, s.cfg.ViewerLease); ok {
				if end := since.Add(time.Duration(d) * time.Millisecond); !now.Before(end) {
					ends = append(ends, dueEnd{se.info.ID, ReasonDetached, now.Sub(end)})
				}
			}
		}
	}
	return ends, unknown
}

// limitsRetry is how often policy is asked again about sessions whose
// limits it could not give (it was down, say).
const limitsRetry = 5 * time.Second

// EnforceLimits ends, every interval, the sessions past their maximum
// length or detached limit, through the same drop as sluicectl sessions
// end (the hangup helper ends the whole process tree). Limits not yet
// known (adopted after a restart, or policy down at put) are asked for.
func (h *Handler) EnforceLimits(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.enforceOnce(ctx, time.Now())
	}
}

func (h *Handler) enforceOnce(ctx context.Context, now time.Time) {
	ends, unknown := h.Store.due(now, limitsRetry)
	if len(unknown) > 0 && h.Policy != nil {
		h.learnLimits(ctx, unknown)
	}
	for _, e := range ends {
		h.Store.log.Info("ptystore: ending a session at its limit", "id", e.id, "reason", e.reason, "late", e.over)
		if err := h.Store.drop(ctx, e.id, nil, e.reason); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrEnding) {
			h.Store.log.Error("ptystore: could not end a session at its limit; trying again", "id", e.id, "reason", e.reason, "err", err)
		}
	}
}

// learnLimits asks policy for the limits of sessions that have none yet.
// A session policy no longer allows gets the file's defaults (its
// verdict's); taking access away is the recheck's, as on-revoke says.
func (h *Handler) learnLimits(ctx context.Context, sessions []msg.SessionInfo) {
	a := msg.CheckSessions{}
	for _, s := range sessions[:min(len(sessions), msg.MaxCheckSessions)] {
		a.Sessions = append(a.Sessions, msg.SessionCheck{ID: s.ID, User: s.Owner, UnixUser: s.UnixUser, Machine: s.Machine})
	}
	rep, err := h.Policy(ctx, a)
	if err != nil || len(rep.Verdicts) != len(a.Sessions) {
		h.Store.log.Warn("ptystore: the limits of sessions could not be learned from policy; asking again later", "sessions", len(a.Sessions), "err", err)
		return
	}
	for i, v := range rep.Verdicts {
		h.Store.SetLimits(a.Sessions[i].ID, v.Limits)
	}
}
