package frontend

import (
	"context"
	"fmt"
	"sync"
	"time"

	"sluice/msg"
)

// viewerReporter is the part of a Backend that tells ptystore which
// sessions have viewers (msg.PtyViewers), for the detached limit that
// ptystore enforces. A Backend without it (benchmarks over a bare pty)
// reports nothing.
type viewerReporter interface {
	PtyViewers(ctx context.Context, a msg.PtyViewers) (msg.PtyViewersReply, error)
}

func (h *Helpers) PtyViewers(ctx context.Context, a msg.PtyViewers) (msg.PtyViewersReply, error) {
	r, _, err := ask[msg.PtyViewersReply](ctx, h.ptystore, msg.OpPtyViewers, a, nil, 0)
	return r, err
}

// limiter enforces the idle limit (the frontend is who sees input), keeps
// ptystore told which sessions have viewers, and detaches the viewers of
// sessions ptystore says the policy detached.
type limiter struct {
	s *Server
	// tick is how often the idle limits are looked at; heartbeat how often
	// ptystore hears which sessions have viewers: well within its lease,
	// and as often as a policy detach must reach open pages (its answer
	// names those sessions).
	tick, heartbeat time.Duration

	mu   sync.Mutex
	idle map[string]time.Duration // by session, as ptystore last gave it

	// lastOK is when ptystore last answered a report (or there was nothing
	// to report): only the reporting goroutine touches it.
	lastOK time.Time

	stop chan struct{}
	done chan struct{}
}

func newLimiter(s *Server) *limiter {
	every := msg.PolicyDetachPollMs * time.Millisecond
	return &limiter{s: s, tick: every, heartbeat: every,
		idle: map[string]time.Duration{}}
}

// learned records a session's limits from a put or get reply.
func (l *limiter) learned(id string, lim msg.Limits) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim.Idle > 0 {
		l.idle[id] = time.Duration(lim.Idle) * time.Millisecond
	} else {
		delete(l.idle, id)
	}
}

func (l *limiter) start() {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.tick)
		defer t.Stop()
		var beat time.Time
		for {
			select {
			case <-l.stop:
				return
			case now := <-t.C:
				l.checkIdle(now)
				// Half a tick of slack: a tick delivered late makes the
				// next one look early, and a skipped report would stretch
				// the interval a policy detach takes to reach the page.
				if now.Sub(beat) >= l.heartbeat-l.tick/2 {
					beat = now
					l.reportAttached()
				}
			}
		}
	}()
}

func (l *limiter) close() {
	if l.stop != nil {
		close(l.stop)
		<-l.done
	}
}

// checkIdle detaches every viewer of a session nobody typed into (or
// joined) for its idle limit; their connections must sign in again.
func (l *limiter) checkIdle(now time.Time) {
	l.mu.Lock()
	type due struct {
		id string
		n  time.Duration
	}
	var dues []due
	for id, n := range l.idle {
		hs := l.s.hub.Get(id)
		if hs == nil {
			delete(l.idle, id) // no longer streamed; an attach tells again
			continue
		}
		if hs.Stats().Viewers > 0 && now.Sub(hs.LastActive()) >= n {
			dues = append(dues, due{id, n})
		}
	}
	l.mu.Unlock()
	for _, d := range dues {
		hs := l.s.hub.Get(d.id)
		if hs == nil {
			continue
		}
		why := fmt.Sprintf("no input for %v: detached; sign in again", d.n)
		if n := hs.DetachAll(why); n > 0 {
			l.s.log.Info("frontend: idle limit: viewers detached", "session", d.id, "viewers", n, "idle", d.n)
			l.left(d.id)
		}
	}
}

// reportAttached tells ptystore every session that has a viewer.
func (l *limiter) reportAttached() {
	vr, ok := l.s.cfg.Backend.(viewerReporter)
	if !ok {
		return
	}
	var ids []string
	for _, id := range l.s.hub.IDs() {
		// A remote session's viewers are its host's ptystore's to hear
		// of, from its relay (fleet.go).
		if hs := l.s.hub.Get(id); hs != nil && hs.Stats().Viewers > 0 && !isRemote(id) {
			ids = append(ids, id)
		}
	}
	now := time.Now()
	if len(ids) == 0 || l.lastOK.IsZero() {
		l.lastOK = now
	}
	var unanswered []string
	for len(ids) > 0 {
		n := min(len(ids), msg.MaxPtyViewers)
		ctx, cancel := context.WithTimeout(context.Background(), 2*l.heartbeat)
		rep, err := vr.PtyViewers(ctx, msg.PtyViewers{Attached: ids[:n]})
		cancel()
		if err != nil {
			l.s.log.Warn("frontend: could not tell ptystore which sessions have viewers", "err", err, "unanswered", now.Sub(l.lastOK))
			unanswered = append(unanswered, ids[:n]...)
		}
		l.detachByPolicy(rep.Detached, policyDetachMsg)
		ids = ids[n:]
	}
	if len(unanswered) == 0 {
		l.lastOK = now
	} else if now.Sub(l.lastOK) >= missedReports*l.heartbeat {
		// The report is how a policy detach reaches the page: a ptystore
		// that does not answer must not leave a detached user typing for
		// good (as the relay does for remote sessions).
		l.detachByPolicy(unanswered, unansweredMsg)
	}
}

// missedReports is how many heartbeats without ptystore's answer detach
// the viewers: one slow answer or a ptystore restart's gap is not enough.
const missedReports = 4

// unansweredMsg is what viewers see when ptystore stopped answering.
const unansweredMsg = "the session store did not answer: detached (the shell keeps running; reattach when it is back)"

// policyDetachMsg is what a viewer of a session the policy detached sees.
const policyDetachMsg = "the policy no longer allows this session: detached (the shell keeps running)"

// detachByPolicy detaches the viewers of the sessions ptystore says the
// policy detached (on-revoke detach). ptystore refuses their reattach; the
// viewers stay signed in, for their other sessions.
func (l *limiter) detachByPolicy(ids []string, why string) {
	for _, id := range ids {
		hs := l.s.hub.Get(id)
		if hs == nil {
			continue
		}
		if n := hs.DetachPolicy(why); n > 0 {
			l.s.log.Info("frontend: viewers detached", "session", id, "viewers", n, "why", why)
			l.lastViewerGone(id)
		}
	}
}

// left tells ptystore, without waiting, that session id lost its last
// viewer: its detached limit runs from now.
func (l *limiter) left(id string) {
	vr, ok := l.s.cfg.Backend.(viewerReporter)
	if !ok || isRemote(id) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := vr.PtyViewers(ctx, msg.PtyViewers{Left: []string{id}}); err != nil {
			// The heartbeat no longer names it, so ptystore's lease
			// runs out instead.
			l.s.log.Warn("frontend: could not tell ptystore a session has no viewer", "session", id, "err", err)
		}
	}()
}

// lastViewerGone reports id to ptystore when its last viewer has left.
func (l *limiter) lastViewerGone(id string) {
	if hs := l.s.hub.Get(id); hs == nil || hs.Stats().Viewers == 0 {
		l.left(id)
	}
}

// idleOut takes the connection's grant away after an idle detach: the
// revocation watcher stops seeing it now, the reader drops it at its next
// look, and the page must sign in again.
func (c *conn) idleOut() {
	c.signOut.Store(true)
	c.signedGrant.Store(nil)
	c.log.Info("detached by the idle limit; signed out")
}
