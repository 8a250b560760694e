package frontend

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
	"sluice/msg"
)

// limitsBackend is the local backend with a session idle limit from
// create's reply (ptystore's, through policy), recording what it is told about viewers.
type limitsBackend struct {
	*localBackend
	idle time.Duration

	mu       sync.Mutex
	left     []string
	attached []string
}

func (b *limitsBackend) CreateShellSession(ctx context.Context, a msg.CreateShellSession) (msg.CreateShellSessionReply, *os.File, error) {
	rep, f, err := b.localBackend.CreateShellSession(ctx, a)
	rep.Limits = msg.Limits{Idle: b.idle.Milliseconds()}
	return rep, f, err
}

func (b *limitsBackend) PtyViewers(_ context.Context, a msg.PtyViewers) (msg.PtyViewersReply, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left = append(b.left, a.Left...)
	b.attached = append(b.attached, a.Attached...)
	return msg.PtyViewersReply{}, nil
}

func (b *limitsBackend) wasLeft(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.left, id)
}

// TestIdleLimit: while someone types, the session stays attached; after
// its idle limit without input every viewer is detached with a message,
// the connection must sign in again, and ptystore hears that the session
// has no viewer (its detached limit starts).
func TestIdleLimit(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"/bin/cat"} })
	be := &limitsBackend{localBackend: l.be, idle: 1500 * time.Millisecond}
	l.srv.cfg.Backend = be // before any connection
	c := l.dial(t)
	att := c.create(t, "u")
	id := att["session"].(map[string]any)["id"].(string)

	// Typing for twice the limit keeps it attached.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte("k\n")); err != nil {
			t.Fatal(err)
		}
		c.until(t, "k")
		time.Sleep(300 * time.Millisecond)
	}
	if be.wasLeft(id) {
		t.Fatal("reported to ptystore as having no viewer while typed into")
	}

	stopped := time.Now()
	m := c.expect(t, "idle")
	took := time.Since(stopped)
	t.Logf("idle limit 1.5s: detached %v after the last key", took)
	if took < 1500*time.Millisecond-100*time.Millisecond {
		t.Errorf("detached after %v, before the idle limit", took)
	}
	if m["id"] != id || m["message"] == "" {
		t.Errorf("idle message %v", m)
	}
	// The grant is gone: every op needs a sign-in again.
	c.send(t, map[string]any{"t": "list"})
	if e := c.nextError(t); e["code"] != codeSignIn {
		t.Errorf("list after the idle detach: %v, want code %s", e, codeSignIn)
	}
	if !settle(func() bool { return be.wasLeft(id) }) {
		t.Error("ptystore was not told the session has no viewer")
	}
	// Signing in again works, and attaching again is not detached at once.
	c.send(t, map[string]any{"t": "login-begin"})
	c.expect(t, "login-options")
	c.send(t, map[string]any{"t": "login-finish", "assertion": map[string]any{}})
	c.expect(t, "signed-in")
	c.send(t, map[string]any{"t": "attach", "id": id})
	c.expect(t, "attached")
	c.send(t, map[string]any{"t": "list"})
	c.expect(t, "sessions")
}

func (c *wsClient) nextError(tb testing.TB) map[string]any {
	tb.Helper()
	for {
		c.deadline()
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			tb.Fatalf("waiting for an error: %v", err)
		}
		if mt != websocket.TextMessage {
			continue
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		if m["t"] == "error" {
			return m
		}
	}
}
