package frontend

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
)

// TestCreateWhileAttached: a page that creates sessions again and again on
// one connection (each attaching it to the new session, the old one's shell
// already gone), with keystrokes in between and no acknowledgements, must
// keep getting answers to its control messages. Found by
// FuzzControlMessage.
func TestCreateWhileAttached(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"/bin/sh", "-c", "echo x"} })
	c := l.dial(t)
	create, _ := json.Marshal(map[string]any{"t": "create", "machine": ".host", "user": "root"})
	list, _ := json.Marshal(map[string]any{"t": "list"})
	for i := 0; i < 300; i++ {
		c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.ws.WriteMessage(websocket.BinaryMessage, []byte("0"))
		if i%3 == 0 {
			c.ws.WriteMessage(websocket.TextMessage, create)
		}
		c.ws.WriteMessage(websocket.TextMessage, list)
		for {
			mt, data, err := c.ws.ReadMessage()
			if err != nil {
				t.Fatalf("iteration %d: no answer to list: %v", i, err)
			}
			if mt != websocket.TextMessage {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatalf("non-JSON control message %q", data)
			}
			if m["t"] == "sessions" {
				break
			}
		}
	}
}
