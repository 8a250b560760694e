package frontend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
	"sluice/msg"
)

// flakyBackend answers pty-viewers as ptystore would, except when down
// (every report fails) or, with failEvery > 0, for every failEvery-th one.
type flakyBackend struct {
	*localBackend
	mu        sync.Mutex
	down      bool
	failEvery int
	reports   int
}

func (b *flakyBackend) PtyViewers(_ context.Context, a msg.PtyViewers) (msg.PtyViewersReply, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reports++
	if b.down || (b.failEvery > 0 && b.reports%b.failEvery == 0) {
		return msg.PtyViewersReply{}, errors.New("dial ptystore: connection refused")
	}
	return msg.PtyViewersReply{}, nil
}

// TestUnansweredReportsDetach: the report is how a policy detach reaches
// the page, so a ptystore that stops answering detaches the viewers after
// missedReports heartbeats instead of leaving them typing for good. Before,
// a failed report only logged, and the page went on forever.
func TestUnansweredReportsDetach(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"/bin/cat"} })
	be := &flakyBackend{localBackend: l.be}
	l.srv.cfg.Backend = be
	c := l.dial(t)
	c.create(t, "u")
	c.ws.WriteMessage(websocket.BinaryMessage, []byte("before\n"))
	c.until(t, "before")

	start := time.Now()
	be.mu.Lock()
	be.down = true
	be.mu.Unlock()
	m := c.expect(t, "detached")
	took := time.Since(start)
	beat := msg.PolicyDetachPollMs * time.Millisecond
	t.Logf("detached %v after ptystore stopped answering (heartbeat %v)", took, beat)
	if m["message"] != unansweredMsg {
		t.Errorf("detached message %v", m)
	}
	if took < (missedReports-1)*beat || took > (missedReports+3)*beat {
		t.Errorf("detached after %v; want about %v", took, missedReports*beat)
	}
	c.ws.WriteMessage(websocket.BinaryMessage, []byte("after\n"))
	if e := c.expect(t, "error"); e["op"] != "input" {
		t.Errorf("input after the detach: %v", e)
	}
}

// TestOccasionalMissedReportKeepsViewers: one report in three failing is
// a slow ptystore, not a gone one: the page keeps typing.
func TestOccasionalMissedReportKeepsViewers(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"/bin/cat"} })
	be := &flakyBackend{localBackend: l.be, failEvery: 3}
	l.srv.cfg.Backend = be
	c := l.dial(t)
	c.create(t, "u")
	deadline := time.Now().Add(time.Duration(3*missedReports) * msg.PolicyDetachPollMs * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		line := []byte("still" + string(rune('a'+i%26)) + "\n")
		c.ws.WriteMessage(websocket.BinaryMessage, line)
		c.until(t, string(line[:len(line)-1]))
		time.Sleep(100 * time.Millisecond)
	}
	be.mu.Lock()
	n := be.reports
	be.mu.Unlock()
	// Enough reports that several failed, none of them detaching.
	if n < 2*be.failEvery {
		t.Errorf("only %d reports in the window", n)
	}
}
