package frontend

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/admit"
)

func dialWS(t *testing.T, l *local) *websocket.Conn {
	t.Helper()
	h := http.Header{}
	h.Set("Origin", l.origin)
	ws, _, err := websocket.DefaultDialer.Dial(l.ws, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	nextText(t, ws) // hello
	return ws
}

func control(t *testing.T, ws *websocket.Conn, m string) map[string]any {
	t.Helper()
	ws.WriteMessage(websocket.TextMessage, []byte(m))
	var r map[string]any
	if err := json.Unmarshal(nextText(t, ws), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLoginGrace: a socket that has not signed in within the grace is
// told and closed; one that signed in is not.
func TestLoginGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	l := startLocalConfig(t, Config{LoginGrace: grace}, func(string) []string { return []string{"cat"} })
	idle := dialWS(t, l)
	signed := dialWS(t, l)
	control(t, signed, `{"t":"login-begin"}`)
	if r := control(t, signed, `{"t":"login-finish","assertion":{}}`); r["t"] != "signed-in" {
		t.Fatalf("sign-in: %v", r)
	}

	var e map[string]any
	if err := json.Unmarshal(nextText(t, idle), &e); err != nil {
		t.Fatal(err)
	}
	if e["t"] != "error" || e["code"] != codeSignIn {
		t.Fatalf("at the end of the grace: %v", e)
	}
	idle.SetReadDeadline(time.Now().Add(deadline))
	if _, _, err := idle.ReadMessage(); err == nil {
		t.Fatal("the idle socket is still open after the grace")
	}

	// Well past the grace, the signed-in one still answers.
	time.Sleep(2 * grace)
	if r := control(t, signed, `{"t":"list"}`); r["t"] != "sessions" {
		t.Fatalf("signed-in socket after the grace: %v", r)
	}
}

// TestSignInRate: ceremonies beyond the rate are refused with busy, and
// the auth helper is not asked.
func TestSignInRate(t *testing.T) {
	l := startLocalConfig(t, Config{SignInRate: admit.NewRate(3)}, func(string) []string { return []string{"cat"} })
	ws := dialWS(t, l)
	for i, want := range []string{"login-options", "login-options", "login-options", "error"} {
		r := control(t, ws, `{"t":"login-begin"}`)
		if r["t"] != want {
			t.Fatalf("ceremony %d: %v, want %s", i, r, want)
		}
		if want == "error" && r["code"] != "busy" {
			t.Fatalf("refusal code %v", r["code"])
		}
	}
	// Another tab from the same address shares the budget.
	if r := control(t, dialWS(t, l), `{"t":"register-begin","token":"x"}`); r["code"] != "busy" {
		t.Fatalf("enrollment past the rate: %v", r)
	}
}

// TestGateCountsSignIn: through a gate that lets one socket wait to sign
// in, a second one is refused with 503 until the first signs in.
func TestGateCountsSignIn(t *testing.T) {
	gate := admit.NewGate(admit.Limits{MaxConns: 8, MaxUnauth: 1, MaxUnauthPerSource: 1}, nil)
	l := startLocalConfig(t, Config{Gate: gate}, func(string) []string { return []string{"cat"} })

	first := dialWS(t, l)
	h := http.Header{}
	h.Set("Origin", l.origin)
	_, resp, err := websocket.DefaultDialer.Dial(l.ws, h)
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second socket waiting to sign in: %v %v", err, resp)
	}
	control(t, first, `{"t":"login-begin"}`)
	if r := control(t, first, `{"t":"login-finish","assertion":{}}`); r["t"] != "signed-in" {
		t.Fatalf("sign-in: %v", r)
	}
	dialWS(t, l) // its slot is free now
}
