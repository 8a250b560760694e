package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/tests/softauthn"
)

// wait bounds every expectation so a bug fails the test instead of hanging
// it; nothing asserts on how long anything took.
const wait = 60 * time.Second

// client is a browser tab: one WebSocket, acknowledging pty output as it
// reads it, as the page does once xterm.js has taken it.
type client struct {
	t    *testing.T
	ws   *websocket.Conn
	wmu  sync.Mutex
	msgs chan map[string]any
	out  chan []byte
	buf  bytes.Buffer // output not yet matched
	all  bytes.Buffer // every output byte since the last attach
	user string

	mu       sync.Mutex
	att      float64
	total    int64
	closeErr error // why the read loop ended, once msgs is closed
}

func dial(t *testing.T, origin string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	return websocket.DefaultDialer.Dial(env.url, h)
}

func connect(t *testing.T) *client {
	t.Helper()
	ws, _, err := dial(t, env.origin)
	if err != nil {
		t.Fatalf("dial %s: %v", env.url, err)
	}
	c := &client{t: t, ws: ws, msgs: make(chan map[string]any, 64), out: make(chan []byte, 1024)}
	go c.read()
	t.Cleanup(func() { ws.Close() })
	c.expect("hello")
	return c
}

func (c *client) read() {
	defer close(c.msgs)
	defer close(c.out)
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.closeErr = err
			c.mu.Unlock()
			return
		}
		if typ == websocket.BinaryMessage {
			c.out <- data
			c.mu.Lock()
			c.total += int64(len(data))
			ack := map[string]any{"t": "ack", "a": c.att, "n": c.total}
			c.mu.Unlock()
			c.send(ack)
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			continue
		}
		if m["t"] == "attached" {
			// The reader sees "attached" before any frame of the new
			// attachment, so the counter restarts here, as in the page.
			c.mu.Lock()
			c.att, c.total = m["a"].(float64), 0
			c.mu.Unlock()
		}
		c.msgs <- m
	}
}

func (c *client) send(m map[string]any) {
	b, _ := json.Marshal(m)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *client) typeText(s string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte(s)); err != nil {
		c.t.Fatalf("type %q: %v", s, err)
	}
}

// next returns the next control message, or fails.
func (c *client) next() map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("connection closed")
		}
		return m
	case <-time.After(wait):
		c.t.Fatal("no message from the frontend")
	}
	return nil
}

// expect reads control messages until one of type typ, failing on an
// error message.
func (c *client) expect(typ string) map[string]any {
	c.t.Helper()
	for {
		m := c.next()
		switch m["t"] {
		case typ:
			return m
		case "error":
			c.t.Fatalf("waiting for %q: error %v: %v (op %v)", typ, m["code"], m["message"], m["op"])
		}
	}
}

// expectError reads control messages until an error, which it returns.
func (c *client) expectError() map[string]any {
	c.t.Helper()
	for {
		if m := c.next(); m["t"] == "error" {
			return m
		}
	}
}

// until reads terminal output until it contains want.
func (c *client) until(want string) {
	c.t.Helper()
	deadline := time.After(wait)
	for !strings.Contains(c.buf.String(), want) {
		select {
		case b, ok := <-c.out:
			if !ok {
				c.t.Fatalf("connection closed waiting for %q; got %q", want, c.buf.String())
			}
			c.buf.Write(b)
			c.all.Write(b)
		case <-deadline:
			c.t.Fatalf("no %q in the output; got %q", want, c.buf.String())
		}
	}
	// Consume through the match so the next until starts after it.
	s := c.buf.String()
	rest := s[strings.Index(s, want)+len(want):]
	c.buf.Reset()
	c.buf.WriteString(rest)
}

// drain moves output that has arrived so far into all.
func (c *client) drain() {
	for {
		select {
		case b, ok := <-c.out:
			if !ok {
				return
			}
			c.buf.Write(b)
			c.all.Write(b)
		default:
			return
		}
	}
}

// register creates a passkey on a over c with an enrollment token.
func (c *client) register(a *softauthn.Authenticator, token string) {
	c.t.Helper()
	c.send(map[string]any{"t": "register-begin", "token": token})
	opts := c.expect("register-options")
	cred, err := a.Register(raw(opts["options"]))
	if err != nil {
		c.t.Fatalf("authenticator register: %v", err)
	}
	c.send(map[string]any{"t": "register-finish", "credential": json.RawMessage(cred)})
	c.expect("registered")
}

// login runs the sign-in ceremony and returns the reply (or the error).
func (c *client) login(a *softauthn.Authenticator) map[string]any {
	c.t.Helper()
	c.send(map[string]any{"t": "login-begin"})
	opts := c.expect("login-options")
	as, err := a.Login(raw(opts["options"]))
	if err != nil {
		c.t.Fatalf("authenticator login: %v", err)
	}
	c.send(map[string]any{"t": "login-finish", "assertion": json.RawMessage(as)})
	for {
		m := c.next()
		if m["t"] == "signed-in" || m["t"] == "error" {
			return m
		}
	}
}

func (c *client) signIn(a *softauthn.Authenticator) {
	c.t.Helper()
	if m := c.login(a); m["t"] != "signed-in" {
		c.t.Fatalf("sign-in refused: %v: %v", m["code"], m["message"])
	} else {
		c.user = m["user"].(string)
	}
}

// create opens a new shell and waits for the attachment.
func (c *client) create(cols, rows int) map[string]any {
	c.t.Helper()
	c.send(map[string]any{"t": "create", "machine": ".host", "user": "root", "cols": cols, "rows": rows})
	m := c.expect("attached")
	c.buf.Reset()
	c.all.Reset()
	return m
}

func (c *client) attach(id, share string) map[string]any {
	c.t.Helper()
	c.send(map[string]any{"t": "attach", "id": id, "share": share, "cols": 100, "rows": 30})
	m := c.expect("attached")
	c.buf.Reset()
	c.all.Reset()
	return m
}

func raw(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprint("re-marshal options: ", err))
	}
	return b
}

func sessionID(m map[string]any) string {
	return m["session"].(map[string]any)["id"].(string)
}
