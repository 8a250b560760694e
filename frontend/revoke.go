package frontend

import (
	"errors"
	"time"

	"github.com/gorilla/websocket"

	"sluice/internal/revoke"
)

// closeRevoked is the WebSocket close code for a connection whose grant
// was revoked (private range 4000-4999); the page shows the reason and
// offers to sign in again.
const closeRevoked = 4001

// watchRevocations polls the published revocation list and closes every
// connection whose grant it revokes. Polling a stat is cheap and works the
// same through bind mounts and under the runner; inotify would save at
// most the poll interval.
func (s *Server) watchRevocations(dir string, every time.Duration) {
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	s.stopWatch = make(chan struct{})
	s.watchDone = make(chan struct{})
	c := revoke.NewChecker(dir)
	go func() {
		defer close(s.watchDone)
		t := time.NewTicker(every)
		defer t.Stop()
		var lastErr string
		for {
			l, changed, err := c.Changed()
			switch {
			case err != nil:
				// The helpers refuse every grant without a list; the
				// connections stay, to recover when it is back.
				if err.Error() != lastErr {
					s.log.Warn("frontend: revocation list unreadable", "err", err)
					lastErr = err.Error()
				}
			case changed:
				lastErr = ""
				s.closeRevoked(l)
			}
			select {
			case <-s.stopWatch:
				return
			case <-t.C:
			}
		}
	}()
}

func (s *Server) closeRevoked(l *revoke.List) {
	s.mu.Lock()
	var dead []*conn
	for c := range s.conns {
		if g := c.signedGrant.Load(); g != nil {
			if err := l.Check(*g); errors.Is(err, revoke.ErrRevoked) {
				dead = append(dead, c)
			}
		}
	}
	s.mu.Unlock()
	for _, c := range dead {
		c.log.Info("frontend: access revoked, closing the connection")
		// WriteControl and Close may run beside the connection's own
		// reader and writers (gorilla documents both as concurrent-safe).
		c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(closeRevoked, "access revoked; sign in again"),
			time.Now().Add(time.Second))
		c.ws.Close()
	}
}
