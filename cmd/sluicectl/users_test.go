package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/installtest"
	"sluice/internal/pty"
	"sluice/internal/revoke"
	"sluice/internal/ticket/tickettest"
	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
	"sluice/tests/softauthn"
)

// TestNamesEscaped: what a compromised helper could put in a user or
// passkey name comes out of sluicectl's writer inert.
func TestNamesEscaped(t *testing.T) {
	for in, want := range map[string]string{
		"alice":                "alice",
		"Schlüssel":            "Schlüssel",
		"\x1b]0;pwned\x07":     `\u001b]0;pwned\u0007`,
		"\x1b]52;c;aGk=\x1b\\": `\u001b]52;c;aGk=\u001b\`,
		"a\x1b[2Jb":            `a\u001b[2Jb`,
		"a\u009b2Jb":           `a\u009b2Jb`, // C1 CSI
		"a\u202eb":             `a\u202eb`,   // bidi override
		"bad\xffutf8":          `bad\xffutf8`,
		"real \ufffd stays":    "real \ufffd stays",
	} {
		var b strings.Builder
		e := newEscaper(&b)
		e.Write([]byte(in))
		e.Flush()
		if got := b.String(); got != want {
			t.Errorf("escaped %q = %q, want %q", in, got, want)
		}
	}
}

func TestUsersUsage(t *testing.T) {
	t.Setenv("SLUICE_RUNTIME_DIR", "")
	t.Setenv("SLUICE_MANIFEST", "")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"users", "frob\x1b]0;x\x07"}, 2, `unknown users verb "frob\u001b]0;x\u0007"`},
		{[]string{"users", "disable"}, 2, "want: users disable USER"},
		{[]string{"users", "enable", "--end-sessions", "alice"}, 2, "--end-sessions goes with"},
		{[]string{"users", "list", "x"}, 2, "list takes no arguments"},
		{[]string{"passkeys"}, 2, "want: passkeys list USER"},
		{[]string{"passkeys", "list"}, 2, "want: passkeys list USER"},
		{[]string{"passkeys", "revoke", "alice"}, 2, "want: passkeys revoke USER ID"},
		{[]string{"passkeys", "revoke", "alice", "xyz"}, 2, `passkey ID "xyz" is not hex`},
		{[]string{"--runtime-dir", "/nonexistent", "--manifest", "/nonexistent/m.json", "users"}, 1, ""},
	} {
		var out, errb strings.Builder
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.stderr) {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q", tc.args, code, errb.String(), tc.code, tc.stderr)
		}
		if strings.ContainsAny(errb.String(), "\x1b\x07") {
			t.Errorf("%q: raw control characters on stderr: %q", tc.args, errb.String())
		}
	}
}

// TestUsersPasskeys runs the real sluicectl against real sluice-auth and
// sluice-ptystore sharing a revocation directory.
func TestUsersPasskeys(t *testing.T) {
	bin := installtest.Build(t, "sluicectl", "sluice-auth", "sluice-ptystore", "sluice-frontend", "sluice-policy")
	run := t.TempDir()
	m, err := suite.BuildManifest(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Write(filepath.Join(run, "build-ids.json")); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "grant.key")
	key, err := grant.WriteKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	revDir := t.TempDir()
	env := []string{"SLUICE_RUNTIME_DIR=" + run}
	startHelper(t, bin, "auth", env, "--state-dir", t.TempDir(), "--grant-key", keyFile, "--revocation-dir", revDir)
	startHelper(t, bin, "ptystore", env, "--grant-key", keyFile, "--revocation-dir", revDir, "--hangup", "off")
	t.Setenv("SLUICE_RUNTIME_DIR", run)
	t.Setenv("SLUICE_MANIFEST", filepath.Join(run, "build-ids.json"))

	// alice registers a passkey and signs in, as through the frontend.
	out, errs, code := sluicectl(t, env, "enroll", "--json", "alice")
	var enr struct{ Token string }
	if err := json.Unmarshal([]byte(out), &enr); err != nil || code != 0 {
		t.Fatalf("enroll: %d %q %s", code, out, errs)
	}
	mine, peer, err := hellosFromManifest(m, msg.ProtoWebToAuth)
	if err != nil {
		t.Fatal(err)
	}
	web := &rpc.Client{Path: filepath.Join(run, "auth.sock"), Hello: mine, Expect: peer}
	webCall := func(op string, args, reply any) error {
		raw, _ := msgpack.Marshal(args)
		_, err := web.Call(context.Background(), msg.Request{Op: op, Args: raw}, nil, reply)
		return err
	}
	a := softauthn.New("localhost", "http://localhost:8080")
	var rb msg.RegisterBeginReply
	if err := webCall(msg.OpRegisterBegin, msg.RegisterBegin{Token: enr.Token}, &rb); err != nil {
		t.Fatal(err)
	}
	cred, err := a.Register(rb.Options)
	if err != nil {
		t.Fatal(err)
	}
	if err := webCall(msg.OpRegisterFinish, msg.RegisterFinish{Token: enr.Token, State: rb.State, Credential: cred, Name: "laptop"}, &msg.RegisterFinishReply{}); err != nil {
		t.Fatal(err)
	}
	var lb msg.LoginBeginReply
	if err := webCall(msg.OpLoginBegin, msg.LoginBegin{}, &lb); err != nil {
		t.Fatal(err)
	}
	as, err := a.Login(lb.Options)
	if err != nil {
		t.Fatal(err)
	}
	var lf msg.LoginFinishReply
	if err := webCall(msg.OpLoginFinish, msg.LoginFinish{State: lb.State, Assertion: as}, &lf); err != nil {
		t.Fatal(err)
	}
	g := lf.Grant

	// Lists.
	out, errs, code = sluicectl(t, env, "users", "--json")
	var users []msg.UserInfo
	if err := json.Unmarshal([]byte(out), &users); err != nil || code != 0 || len(users) != 1 || users[0].Name != "alice" || users[0].Passkeys != 1 || users[0].LastUsed == 0 {
		t.Fatalf("users --json: %d %v %q %s", code, err, out, errs)
	}
	if out, _, code = sluicectl(t, env, "users", "list"); code != 0 || !strings.Contains(out, "alice") || !strings.Contains(out, "enabled") {
		t.Errorf("users table: %d\n%s", code, out)
	}
	out, errs, code = sluicectl(t, env, "passkeys", "list", "alice", "--json")
	var pk struct {
		User     string
		Passkeys []struct{ ID, Name string }
	}
	if err := json.Unmarshal([]byte(out), &pk); err != nil || code != 0 || len(pk.Passkeys) != 1 || pk.Passkeys[0].Name != "laptop" {
		t.Fatalf("passkeys list --json: %d %v %q %s", code, err, out, errs)
	}
	id := pk.Passkeys[0].ID
	if out, _, code = sluicectl(t, env, "passkeys", "list", "alice"); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "laptop") {
		t.Errorf("passkeys table: %d\n%s", code, out)
	}

	// Not found is its own status.
	for _, args := range [][]string{
		{"passkeys", "list", "nobody"},
		{"users", "disable", "nobody"},
		{"users", "remove", "nobody"},
		{"passkeys", "revoke", "alice", "00ff"},
	} {
		if _, errs, code := sluicectl(t, env, args...); code != exitNotFound {
			t.Errorf("%q: exit %d (%s), want %d", args, code, errs, exitNotFound)
		}
	}

	// A session of alice's in ptystore, to see the grant refused there.
	ptyMine, ptyPeer, err := hellosFromManifest(m, msg.ProtoWebToPtyStore)
	if err != nil {
		t.Fatal(err)
	}
	ptys := &rpc.Client{Path: filepath.Join(run, "ptystore.sock"), Hello: ptyMine, Expect: ptyPeer}
	putMine, putPeer, err := hellosFromManifest(m, msg.ProtoPolicyToPtyStore)
	if err != nil {
		t.Fatal(err)
	}
	putter := &rpc.Client{Path: filepath.Join(run, "ptystore.sock"), Hello: putMine, Expect: putPeer} // as policy
	ptyList := func() error {
		raw, _ := msgpack.Marshal(msg.PtyList{Grant: g})
		_, err := ptys.Call(context.Background(), msg.Request{Op: msg.OpPtyList, Args: raw}, nil, &msg.PtyListReply{})
		return err
	}
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	info := msg.SessionInfo{ID: "s-alice", Owner: "alice", UnixUser: "alice",
		Created: time.Now().UnixMilli(), Machine: msg.HostMachine, Sharing: msg.SharePrivate}
	raw, _ := msgpack.Marshal(msg.PtyPut{Grant: g, Session: info, Ticket: tickettest.For(t, key, info, master)})
	var put msg.PtyPutReply
	if _, err := putter.Call(context.Background(), msg.Request{Op: msg.OpPtyPut, Args: raw}, []*os.File{master}, &put); err != nil {
		t.Fatalf("pty-put: %v", err)
	}
	master.Close()

	// Disable: the grant fails at ptystore at once; the session is kept.
	if out, errs, code = sluicectl(t, env, "users", "disable", "alice"); code != 0 || out != "disabled alice\n" {
		t.Fatalf("disable: %d %q %s", code, out, errs)
	}
	if err := ptyList(); rpc.CodeOf(err) != msg.CodeBadGrant {
		t.Fatalf("disabled user's grant at ptystore: %v", err)
	}
	if out, _, _ = sluicectl(t, env, "users", "disable", "alice"); out != "alice was already disabled\n" {
		t.Errorf("disable twice: %q", out)
	}
	if out, _, _ = sluicectl(t, env, "sessions", "--json"); !strings.Contains(out, put.Session.ID) {
		t.Errorf("disable without --end-sessions ended the session: %s", out)
	}
	if out, errs, code = sluicectl(t, env, "users", "enable", "alice", "--json"); code != 0 || !strings.Contains(out, `"changed": true`) {
		t.Fatalf("enable: %d %q %s", code, out, errs)
	}
	if err := ptyList(); rpc.CodeOf(err) != msg.CodeBadGrant {
		t.Fatalf("a grant from before the disable works again: %v", err)
	}

	// Revoke the passkey, ending her sessions.
	out, errs, code = sluicectl(t, env, "passkeys", "revoke", "alice", id, "--end-sessions", "--json")
	var rv struct {
		Revoked   string
		Remaining int
		Ended     []string `json:"ended_sessions"`
	}
	if err := json.Unmarshal([]byte(out), &rv); err != nil || code != 0 || rv.Revoked != id || rv.Remaining != 0 || len(rv.Ended) != 1 || rv.Ended[0] != put.Session.ID {
		t.Fatalf("passkeys revoke --end-sessions: %d %v %q %s", code, err, out, errs)
	}
	if out, _, _ = sluicectl(t, env, "sessions", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("sessions after --end-sessions: %s", out)
	}
	l, err := revoke.NewChecker(revDir).Current()
	if err != nil || !errors.Is(l.Check(g), revoke.ErrRevoked) {
		t.Fatalf("published list: %v", err)
	}

	if out, errs, code = sluicectl(t, env, "users", "remove", "alice"); code != 0 || out != "removed alice\n" {
		t.Fatalf("remove: %d %q %s", code, out, errs)
	}
	if out, _, _ = sluicectl(t, env, "users", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("users after remove: %s", out)
	}
}
