package frontend

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
)

// FuzzControlMessage sends arbitrary text and binary messages to a real
// frontend over a real WebSocket, on a signed-in connection, and requires
// that the connection survives with a clear answer: every control message
// the page can send is parsed by the same code path as these. A panic, a
// hang, or a dropped connection fails.
func FuzzControlMessage(f *testing.F) {
	for _, s := range []string{
		`{"t":"ack","n":1,"a":1}`, `{"t":"resize","cols":80,"rows":24}`,
		`{"t":"resize","cols":-1}`, `{"t":"create","machine":".host","user":"root"}`,
		`{"t":"attach","id":"x","share":"!!"}`, `{"t":"share","id":"","mode":"rw"}`,
		`{"t":"end","id":"nope"}`, `{"t":"login-finish","assertion":"x"}`, `{"t":1}`,
		`{"t":"register-begin","token":"` + string(make([]byte, 300)) + `"}`,
		`[]`, `null`, `{`, "\xff\xfe", `{"t":"list","n":1e400}`,
	} {
		f.Add(true, []byte(s))
	}
	f.Add(false, []byte("echo hi\r"))
	// A created session runs a shell that ends at once: the fuzzer can
	// create as many as it likes without piling up processes.
	l := startLocal(f, hub.Options{}, func(string) []string { return []string{"/bin/sh", "-c", "echo x"} })
	c := l.dial(f)
	f.Cleanup(func() { c.ws.Close() })
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		if len(data) > 16<<10 {
			return
		}
		typ := websocket.BinaryMessage
		if text {
			typ = websocket.TextMessage
		}
		c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.ws.WriteMessage(typ, data); err != nil {
			t.Fatalf("write: %v", err)
		}
		// The connection must still answer: list is served to a signed-in
		// page; everything the fuzz input provoked comes before its answer.
		b, _ := json.Marshal(map[string]any{"t": "list"})
		if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
			t.Fatalf("write list: %v", err)
		}
		for {
			mt, msg, err := c.ws.ReadMessage()
			if err != nil {
				t.Fatalf("connection lost after %q: %v", data, err)
			}
			if mt != websocket.TextMessage {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(msg, &m); err != nil {
				t.Fatalf("frontend sent non-JSON control message %q", msg)
			}
			if m["t"] == "sessions" {
				return
			}
		}
	})
}
