package frontend

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"sluice/frontend/hub"
	"sluice/msg"
	"sluice/rpc"
)

// passkeyBackend is the local backend with passkey ops that record what
// they were asked.
type passkeyBackend struct {
	*localBackend
	mu       sync.Mutex
	grants   []msg.Grant // of every passkey op, in order
	revoked  []msg.PasskeyRevoke
	begun    []string // register-begin tokens
	finished []msg.RegisterFinish
}

func (p *passkeyBackend) note(g msg.Grant) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.grants = append(p.grants, g)
}

func (p *passkeyBackend) PasskeyList(_ context.Context, a msg.PasskeyList) (msg.PasskeyListReply, error) {
	p.note(a.Grant)
	return msg.PasskeyListReply{User: a.Grant.User, Passkeys: []msg.Passkey{
		{ID: []byte{0xfb, 0xff, 1}, Name: "laptop", Created: 1000, LastUsed: 2000, Current: true},
		{ID: []byte{2}, Created: 3000},
	}}, nil
}

func (p *passkeyBackend) PasskeyRevoke(_ context.Context, a msg.PasskeyRevoke) (msg.PasskeyRevokeReply, error) {
	p.note(a.Grant)
	p.mu.Lock()
	p.revoked = append(p.revoked, a)
	p.mu.Unlock()
	return msg.PasskeyRevokeReply{User: a.Grant.User, Remaining: 1}, nil
}

func (p *passkeyBackend) PasskeyAdd(_ context.Context, a msg.PasskeyAdd) (msg.EnrollReply, error) {
	p.note(a.Grant)
	return msg.EnrollReply{User: a.Grant.User, Token: "tok-for-" + a.Grant.User}, nil
}

func (p *passkeyBackend) RegisterBegin(_ context.Context, a msg.RegisterBegin) (msg.RegisterBeginReply, error) {
	p.mu.Lock()
	p.begun = append(p.begun, a.Token)
	p.mu.Unlock()
	return msg.RegisterBeginReply{User: "bench", Options: []byte(`{"publicKey":{}}`), State: []byte("st")}, nil
}

func (p *passkeyBackend) RegisterFinish(_ context.Context, a msg.RegisterFinish) (msg.RegisterFinishReply, error) {
	p.mu.Lock()
	p.finished = append(p.finished, a)
	p.mu.Unlock()
	return msg.RegisterFinishReply{User: "bench", CredentialID: []byte{3}}, nil
}

// TestPasskeyMessages: the page's passkey messages reach auth with the
// grant the connection signed in with, whatever user or grant the browser
// puts in them; the add token never leaves the server; a bad ID is refused
// before any call; a connection not signed in gets sign-in.
func TestPasskeyMessages(t *testing.T) {
	be := &passkeyBackend{localBackend: &localBackend{}}
	l := startLocalConfig(t, Config{Hub: hub.Options{}, Backend: be}, nil)

	// Not signed in: nothing reaches auth.
	h := http.Header{}
	h.Set("Origin", l.origin)
	anon, _, err := websocket.DefaultDialer.Dial(l.ws, h)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	a := &wsClient{ws: anon}
	a.expect(t, "hello")
	for _, op := range []string{"passkey-list", "passkey-add", "passkey-revoke"} {
		a.send(t, map[string]any{"t": op, "id": "AQ"})
		if e := a.expect(t, "error"); e["code"] != codeSignIn || e["op"] != op {
			t.Fatalf("%s before sign-in: %v", op, e)
		}
	}

	c := l.dial(t) // signs in as "bench"
	// A browser's attempt to name someone else's grant or user is ignored.
	forged := map[string]any{"user": "root", "User": "root", "grant": map[string]any{"user": "root"}}
	with := func(m map[string]any) map[string]any {
		for k, v := range forged {
			m[k] = v
		}
		return m
	}
	c.send(t, with(map[string]any{"t": "passkey-list"}))
	list := c.expect(t, "passkeys")
	got, _ := json.Marshal(list["passkeys"])
	want := `[{"created":1000,"current":true,"id":"-_8B","last_used":2000,"name":"laptop"},{"created":3000,"current":false,"id":"Ag","last_used":0,"name":""}]`
	if string(got) != want || list["user"] != "bench" {
		t.Fatalf("passkeys %s user %v, want %s for bench", got, list["user"], want)
	}

	for _, bad := range []string{"", "not base64!", "AQ=="} {
		c.send(t, map[string]any{"t": "passkey-revoke", "id": bad})
		if e := c.expect(t, "error"); e["code"] != rpc.CodeBadRequest {
			t.Fatalf("revoke id %q: %v", bad, e)
		}
	}
	c.send(t, with(map[string]any{"t": "passkey-revoke", "id": "-_8B", "last": true}))
	if r := c.expect(t, "passkey-revoked"); r["id"] != "-_8B" || r["remaining"] != float64(1) {
		t.Fatalf("passkey-revoked %v", r)
	}

	c.send(t, with(map[string]any{"t": "passkey-add", "token": "browser-token"}))
	opts := c.expect(t, "register-options")
	if _, leaked := opts["token"]; leaked {
		t.Fatalf("the add token went to the browser: %v", opts)
	}
	c.send(t, map[string]any{"t": "register-finish", "credential": map[string]any{}, "name": "phone", "token": "browser-token"})
	c.expect(t, "registered")

	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.grants) != 3 {
		t.Fatalf("%d passkey calls reached auth, want 3", len(be.grants))
	}
	for i, g := range be.grants {
		if g.User != "bench" || g.Expires == 0 {
			t.Fatalf("call %d carried grant %+v, not the connection's", i, g)
		}
	}
	if len(be.revoked) != 1 || string(be.revoked[0].ID) != "\xfb\xff\x01" || !be.revoked[0].Last || be.revoked[0].User != "" {
		t.Fatalf("revoke calls %+v", be.revoked)
	}
	if len(be.begun) != 1 || be.begun[0] != "tok-for-bench" {
		t.Fatalf("register-begin tokens %q, want the passkey-add token", be.begun)
	}
	if len(be.finished) != 1 || be.finished[0].Token != "tok-for-bench" || be.finished[0].Name != "phone" || string(be.finished[0].State) != "st" {
		t.Fatalf("register-finish %+v", be.finished)
	}
}
