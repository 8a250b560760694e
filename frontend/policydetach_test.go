package frontend

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
	"sluice/msg"
)

// detachBackend is the local backend whose pty-viewers answer names the
// sessions in detached, as ptystore does after a recheck under on-revoke
// detach.
type detachBackend struct {
	*localBackend
	mu       sync.Mutex
	detached []string
	reports  int
}

func (b *detachBackend) PtyViewers(_ context.Context, a msg.PtyViewers) (msg.PtyViewersReply, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reports++
	var rep msg.PtyViewersReply
	for _, id := range a.Attached {
		if slices.Contains(b.detached, id) {
			rep.Detached = append(rep.Detached, id)
		}
	}
	return rep, nil
}

// TestPolicyDetachCutsOffViewers: when ptystore's answer names a session,
// its viewers are detached with a message within the report interval
// (and a margin), and stay signed in; other sessions are left alone.
// Before, nothing in the frontend acted on it and the page went on.
func TestPolicyDetachCutsOffViewers(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"/bin/cat"} })
	be := &detachBackend{localBackend: l.be}
	l.srv.cfg.Backend = be // before any connection
	c1, c2 := l.dial(t), l.dial(t)
	id1 := c1.create(t, "u")["session"].(map[string]any)["id"].(string)
	c2.create(t, "u")
	c1.ws.WriteMessage(websocket.BinaryMessage, []byte("before\n"))
	c1.until(t, "before")

	start := time.Now()
	be.mu.Lock()
	be.detached = []string{id1}
	be.mu.Unlock()
	m := c1.expect(t, "detached")
	took := time.Since(start)
	t.Logf("detached %v after ptystore's answer changed (reports every %d ms)", took, msg.PolicyDetachPollMs)
	if m["id"] != id1 || m["message"] != policyDetachMsg {
		t.Errorf("detached message %v", m)
	}
	if took > time.Second {
		t.Errorf("detached after %v; the bound is 1 s", took)
	}
	// Its keys go nowhere now; the other page still types.
	c1.ws.WriteMessage(websocket.BinaryMessage, []byte("after\n"))
	if e := c1.expect(t, "error"); e["op"] != "input" {
		t.Errorf("input after the detach: %v", e)
	}
	c2.ws.WriteMessage(websocket.BinaryMessage, []byte("other\n"))
	c2.until(t, "other")
	// Still signed in: it opens another session.
	c1.create(t, "u")
}
