package frontend

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
	"sluice/msg"
	"sluice/rpc"
)

// nextText reads the next control message as raw JSON, skipping pty
// output.
func nextText(t *testing.T, ws *websocket.Conn) []byte {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(deadline))
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("reading a control message: %v", err)
		}
		if mt == websocket.TextMessage {
			return data
		}
	}
}

// TestTargetsBeforeSignIn: the list is the user's, so without a sign-in
// there is none, and the policy is not asked.
func TestTargetsBeforeSignIn(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"cat"} })
	l.be.targets = msg.AllowedTargetsReply{Targets: []msg.Target{{User: "root", Machine: msg.HostMachine}}}
	h := http.Header{}
	h.Set("Origin", l.origin)
	ws, _, err := websocket.DefaultDialer.Dial(l.ws, h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if hello := nextText(t, ws); !json.Valid(hello) {
		t.Fatalf("hello %q", hello)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"t":"targets"}`))
	var e map[string]any
	if err := json.Unmarshal(nextText(t, ws), &e); err != nil {
		t.Fatal(err)
	}
	if e["t"] != "error" || e["op"] != "targets" || e["code"] != codeSignIn {
		t.Fatalf("targets before sign-in: %v", e)
	}
	l.be.mu.Lock()
	defer l.be.mu.Unlock()
	if len(l.be.targetsAsked) != 0 {
		t.Fatalf("the backend was asked %d times before sign-in", len(l.be.targetsAsked))
	}
}

// TestTargets: what the policy said reaches the page as it said it,
// asked with the connection's grant; an empty list is an empty array
// (the page says "no shells"), a list past the bound is cut and says so,
// and the policy's refusals come back as errors of the op.
func TestTargets(t *testing.T) {
	var many []msg.Target
	var manyWant []Target
	for i := range msg.MaxTargets + 5 {
		many = append(many, msg.Target{User: fmt.Sprintf("u%d", i), Machine: msg.HostMachine})
		if i < msg.MaxTargets {
			manyWant = append(manyWant, Target{User: fmt.Sprintf("u%d", i), Machine: msg.HostMachine})
		}
	}
	for _, tc := range []struct {
		name      string
		rep       msg.AllowedTargetsReply
		err       error
		want      []Target
		truncated bool
		code      string // an error instead
		text      string
	}{
		{name: "exact and patterns", rep: msg.AllowedTargetsReply{Targets: []msg.Target{
			{User: "root", Machine: msg.HostMachine},
			{User: "*", Machine: "web1", Pattern: true},
			{User: "bench", Machine: "*", Pattern: true},
		}}, want: []Target{
			{User: "root", Machine: ".host"},
			{User: "*", Machine: "web1", Pattern: true},
			{User: "bench", Machine: "*", Pattern: true},
		}},
		{name: "none", rep: msg.AllowedTargetsReply{}, want: []Target{}},
		{name: "truncated by policy", rep: msg.AllowedTargetsReply{Targets: many[:3], Truncated: true}, want: manyWant[:3], truncated: true},
		{name: "over the bound", rep: msg.AllowedTargetsReply{Targets: many}, want: manyWant, truncated: true},
		{name: "bad grant", err: &rpc.RemoteError{Code: msg.CodeBadGrant, Msg: "grant expired or not yet valid; sign in again"},
			code: msg.CodeBadGrant, text: "grant expired or not yet valid; sign in again"},
		{name: "policy stopped", err: &StoppedError{Helper: msg.Policy, Err: rpc.ErrTruncated},
			code: rpc.CodeInternal, text: "the policy helper stopped before answering; try again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLocal(t, hub.Options{}, func(string) []string { return []string{"cat"} })
			l.be.targets, l.be.targetsErr = tc.rep, tc.err
			c := l.dial(t)
			defer c.ws.Close()
			c.send(t, map[string]any{"t": "targets"})
			raw := nextText(t, c.ws)
			var got struct {
				T         string          `json:"t"`
				Targets   json.RawMessage `json:"targets"`
				Truncated bool            `json:"truncated"`
				Op        string          `json:"op"`
				Code      string          `json:"code"`
				Message   string          `json:"message"`
			}
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			if tc.code != "" {
				if got.T != "error" || got.Op != "targets" || got.Code != tc.code || got.Message != tc.text {
					t.Fatalf("got %s, want error %s %q", raw, tc.code, tc.text)
				}
				return
			}
			want, _ := json.Marshal(tc.want)
			if got.T != "targets" || string(got.Targets) != string(want) || got.Truncated != tc.truncated {
				t.Fatalf("got %s\nwant targets %s, truncated %v", raw, want, tc.truncated)
			}
			l.be.mu.Lock()
			defer l.be.mu.Unlock()
			if len(l.be.targetsAsked) != 1 || l.be.targetsAsked[0].User != "bench" {
				t.Fatalf("backend asked with %+v, want the connection's grant once", l.be.targetsAsked)
			}
		})
	}
}
