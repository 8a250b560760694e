package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/audit"
	"sluice/internal/grant"
	"sluice/internal/installtest"
	"sluice/internal/pty"
	"sluice/internal/ticket/tickettest"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/suite"
)

func TestMain(m *testing.M) {
	code := m.Run()
	installtest.Cleanup()
	os.Exit(code)
}

func TestUsage(t *testing.T) {
	// run sets these from the global flags; keep them out of later tests.
	t.Setenv("SLUICE_RUNTIME_DIR", "")
	t.Setenv("SLUICE_MANIFEST", "")
	for _, tc := range []struct {
		args     []string
		code     int
		stdout   string
		stderr   string
		noStdout bool
	}{
		{args: []string{"--help"}, code: 0, stdout: "usage: sluicectl"},
		{args: []string{"help"}, code: 0, stdout: "Commands:"},
		{args: nil, code: 2, stderr: "usage: sluicectl", noStdout: true},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"--no-such-flag"}, code: 2},
		{args: []string{"enroll"}, code: 2, stderr: "want exactly one USER"},
		{args: []string{"enroll", "a", "b"}, code: 2, stderr: "want exactly one USER"},
		{args: []string{"enroll", "--help"}, code: 0, stdout: "usage: sluicectl enroll"},
		{args: []string{"enroll", "--ttl", "soon", "alice"}, code: 2, stderr: "invalid value"},
		{args: []string{"sessions", "frob"}, code: 2, stderr: `unknown sessions verb "frob"`},
		{args: []string{"sessions", "end"}, code: 2, stderr: "want: sessions end [--host NAME] [HOST/]ID"},
		{args: []string{"call", "auth"}, code: 2, stderr: "want HELPER OP"},
		{args: []string{"call", "nosuch", "op"}, code: 2, stderr: `no protocol is served by "nosuch"`},
		{args: []string{"call", "auth", "enroll", "{not json"}, code: 2, stderr: "JSON-ARGS"},
		{args: []string{"call", "--protocol", msg.ProtoWebToPolicy, "auth", "enroll"}, code: 2, stderr: "does not serve"},
		{args: []string{"keygen"}, code: 2, stderr: "want FILE"},
		{args: []string{"audit", "--root", "/nonexistent"}, code: 1, stderr: "no sluice units found"},
		// A helper that is not running is a failure, not a usage error.
		{args: []string{"--runtime-dir", "/nonexistent", "--manifest", "/nonexistent/m.json", "enroll", "alice"}, code: 1},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb strings.Builder
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout %q lacks %q", out.String(), tc.stdout)
			}
			if !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.stderr)
			}
			if tc.noStdout && out.Len() != 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grant.key")
	var out, errb strings.Builder
	if code := run([]string{"keygen", path}, &out, &errb); code != 0 {
		t.Fatalf("keygen: %d %s", code, errb.String())
	}
	if _, err := grant.LoadKey(path); err != nil {
		t.Errorf("the key does not load: %v", err)
	}
	if code := run([]string{"keygen", path}, &out, &errb); code != 1 {
		t.Errorf("keygen over an existing key: exit %d, want 1", code)
	}
}

// sluicectl runs the built binary, as an admin would.
func sluicectl(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	bin := installtest.Build(t, "sluicectl")
	cmd := exec.Command(filepath.Join(bin, "sluicectl"), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestEnrollAndCall runs the real sluicectl against a real sluice-auth on
// a socket in a scratch runtime directory, with a manifest of the real
// binaries.
func TestEnrollAndCall(t *testing.T) {
	bin := installtest.Build(t, "sluicectl", "sluice-auth", "sluice-frontend")
	run := t.TempDir()
	state := t.TempDir()
	m, err := suite.BuildManifest(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Write(filepath.Join(run, "build-ids.json")); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "grant.key")
	if _, err := grant.WriteKeyFile(key); err != nil {
		t.Fatal(err)
	}
	env := []string{"SLUICE_RUNTIME_DIR=" + run}
	calls := startHelper(t, bin, "auth", env, "--state-dir", state, "--grant-key", key)

	out, errs, code := sluicectl(t, env, "enroll", "alice")
	if code != 0 {
		t.Fatalf("enroll: %d %s", code, errs)
	}
	if !strings.HasPrefix(out, "http://localhost:8080/enroll#") || !strings.Contains(errs, "one-time link for alice") {
		t.Errorf("enroll printed %q / %q", out, errs)
	}
	line := <-calls
	for _, want := range []string{"call=enroll", "result=ok", "uid=0", "duration="} {
		if !strings.Contains(line, want) {
			t.Errorf("call log %q lacks %q", line, want)
		}
	}

	// erin has no passkey: --unless-enrolled still makes her a link.
	if out, errs, code := sluicectl(t, env, "enroll", "--unless-enrolled", "erin"); code != 0 || !strings.HasPrefix(out, "http://localhost:8080/enroll#") {
		t.Errorf("enroll --unless-enrolled without a passkey: %d %q %s", code, out, errs)
	}
	<-calls

	out, errs, code = sluicectl(t, env, "enroll", "--json", "--base-url", "https://shell.example/", "bob")
	var enr struct{ User, URL, Token, Expires string }
	if err := json.Unmarshal([]byte(out), &enr); err != nil || code != 0 {
		t.Fatalf("enroll --json: %d %v %q %s", code, err, out, errs)
	}
	if enr.User != "bob" || enr.URL != "https://shell.example/enroll#"+enr.Token || enr.Token == "" {
		t.Errorf("enroll --json: %+v", enr)
	}

	// call speaks the protocol by hand: the enrollment token it gets is
	// one that "web to auth" (spoken as the frontend) accepts.
	out, errs, code = sluicectl(t, env, "call", "auth", "enroll", `{"user":"carol","ttl_seconds":60}`)
	var rep struct {
		User  string `json:"user"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.User != "carol" {
		t.Fatalf("call enroll: %d %v %q %s", code, err, out, errs)
	}
	out, errs, code = sluicectl(t, env, "call", "--protocol", msg.ProtoWebToAuth, "auth", "register-begin",
		`{"token":"`+rep.Token+`"}`)
	if code != 0 || !strings.Contains(out, `"user": "carol"`) || !strings.Contains(out, `"challenge"`) {
		t.Errorf("call register-begin: %d %q %s", code, out, errs)
	}
	if !strings.Contains(errs, "as frontend") {
		t.Errorf("call did not say whom it spoke as: %q", errs)
	}

	// Errors the helper sends back are exit status 1 with the code.
	_, errs, code = sluicectl(t, env, "call", "auth", "no-such-op")
	if code != 1 || !strings.Contains(errs, "bad-request") {
		t.Errorf("unknown op: %d %q", code, errs)
	}
	_, errs, code = sluicectl(t, env, "call", "--protocol", msg.ProtoWebToAuth, "auth", "register-begin", `{"token":"forged"}`)
	if code != 1 || !strings.Contains(errs, "remote") {
		t.Errorf("forged token: %d %q", code, errs)
	}
}

// startHelper starts sluice-NAME listening on RUNTIME/NAME.sock, waits
// for the socket, and returns its call log lines (stderr, which is the
// journal under systemd).
func startHelper(t *testing.T, bin, name string, env []string, args ...string) <-chan string {
	t.Helper()
	run := strings.TrimPrefix(env[0], "SLUICE_RUNTIME_DIR=")
	sock := filepath.Join(run, name+".sock")
	cmd := exec.Command(filepath.Join(bin, "sluice-"+name), append([]string{"--listen", sock}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	calls := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "rpc: call") {
				select {
				case calls <- sc.Text():
				default:
				}
			}
		}
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	waitSocket(t, sock, exited)
	return calls
}

// waitSocket polls for the helper's socket. Only readiness is waited
// for; nothing is asserted about how long it takes.
func waitSocket(t *testing.T, path string, exited <-chan struct{}) {
	t.Helper()
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatal("helper exited before listening")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestSessions lists and ends sessions held by a real sluice-ptystore.
func TestSessions(t *testing.T) {
	bin := installtest.Build(t, "sluicectl", "sluice-ptystore", "sluice-frontend", "sluice-policy")
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
	env := []string{"SLUICE_RUNTIME_DIR=" + run}
	// No hangup helper here: the e2e tests end shells through it.
	startHelper(t, bin, "ptystore", env, "--grant-key", keyFile, "--hangup", "off")

	out, errs, code := sluicectl(t, env, "sessions", "--json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("sessions on an empty store: %d %q %s", code, out, errs)
	}

	// Hand the store a real pty, as policy does.
	t.Setenv("SLUICE_RUNTIME_DIR", run)
	t.Setenv("SLUICE_MANIFEST", filepath.Join(run, "build-ids.json"))
	// Sessions come from policy, which puts them: the test puts as policy.
	putMine, putPeer, err := hellosFromManifest(m, msg.ProtoPolicyToPtyStore)
	if err != nil {
		t.Fatal(err)
	}
	putCl := &rpc.Client{Path: filepath.Join(run, "ptystore.sock"), Hello: putMine, Expect: putPeer}
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	g, err := grant.Sign(key, "alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	info := msg.SessionInfo{ID: "s-test-1", Owner: "alice", UnixUser: "alice", Created: time.Now().UnixMilli(),
		Machine: msg.HostMachine, Sharing: msg.SharePrivate}
	args, _ := msgpack.Marshal(msg.PtyPut{Grant: g, Session: info, Ticket: tickettest.For(t, key, info, master)})
	var put msg.PtyPutReply
	if _, err := putCl.Call(context.Background(), msg.Request{Op: msg.OpPtyPut, Args: args}, []*os.File{master}, &put); err != nil {
		t.Fatalf("pty-put: %v", err)
	}
	master.Close()

	out, errs, code = sluicectl(t, env, "sessions", "list", "--json")
	var list []msg.SessionInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list) != 1 || list[0].Owner != "alice" || list[0].ID != put.Session.ID {
		t.Fatalf("sessions --json: %d %v %q %s", code, err, out, errs)
	}
	out, _, code = sluicectl(t, env, "sessions")
	if code != 0 || !strings.Contains(out, put.Session.ID) || !strings.Contains(out, "OWNER") {
		t.Errorf("sessions table: %d\n%s", code, out)
	}
	if out, errs, code = sluicectl(t, env, "sessions", "end", put.Session.ID); code != 0 || !strings.Contains(out, "ended") {
		t.Errorf("sessions end: %d %q %s", code, out, errs)
	}
	if out, _, code = sluicectl(t, env, "sessions", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("after end: %d %q", code, out)
	}
	if _, errs, code = sluicectl(t, env, "sessions", "end", put.Session.ID); code != 1 || !strings.Contains(errs, "not-found") {
		t.Errorf("ending it again: %d %q", code, errs)
	}
}

func hellosFromManifest(m *buildid.Manifest, name string) (mine, peer rpc.Hello, err error) {
	p, _ := msg.Lookup(name)
	mine.Intent, peer.Intent = msg.Intent(p, "client"), msg.Intent(p, "server")
	e, err := m.Lookup(p.Client, mine.Intent)
	if err != nil {
		return mine, peer, err
	}
	mine.BuildID = e.BuildID
	if e, err = m.Lookup(p.Server, peer.Intent); err != nil {
		return mine, peer, err
	}
	peer.BuildID = e.BuildID
	return mine, peer, nil
}

// TestAudit installs the real tree and audits it.
func TestAudit(t *testing.T) {
	dest := installtest.Install(t, "/usr")
	out, errs, code := sluicectl(t, nil, "audit", "--root", dest, "--json")
	if code != 0 {
		t.Fatalf("audit: exit %d\n%s\n%s", code, out, errs)
	}
	var reports []audit.Report
	if err := json.Unmarshal([]byte(out), &reports); err != nil {
		t.Fatalf("audit --json: %v\n%s", err, out)
	}
	if len(reports) != len(audit.Helpers()) {
		t.Fatalf("%d reports, want %d", len(reports), len(audit.Helpers()))
	}
	for _, r := range reports {
		if len(r.Problems) > 0 {
			t.Errorf("%s: %v", r.Component, r.Problems)
		}
		if r.Exposure == nil || *r.Exposure > audit.Ceiling(r.Component) {
			t.Errorf("%s: exposure %v (%s)", r.Component, r.Exposure, r.ExposureErr)
		}
		if r.ProfileSum == "" || len(r.BuildIDs) == 0 || r.User == "" {
			t.Errorf("%s: incomplete report %+v", r.Component, r)
		}
		if r.Component != "frontend" && (r.Mode != "0660" || r.Group == "" || len(r.Callers) == 0) {
			t.Errorf("%s: socket %s %s callers %v", r.Component, r.Mode, r.Group, r.Callers)
		}
	}
	// The human form names every helper and ends with the tally.
	out, _, code = sluicectl(t, nil, "audit", "--root", dest, "auth")
	if code != 0 || !strings.HasPrefix(out, "auth\n") || !strings.Contains(out, "1 helpers, 0 problems") {
		t.Errorf("audit auth: %d\n%s", code, out)
	}
	// ... and its ops, from the code.
	if !strings.Contains(out, "web to auth: register-begin, register-finish") {
		t.Errorf("audit auth shows no op table:\n%s", out)
	}
	t.Logf("sluicectl audit auth:\n%s", out)

	// A widened profile in the installed tree is reported and fails.
	prof := filepath.Join(dest, "etc/apparmor.d/usr.libexec.sluice.sluice-auth")
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prof, []byte(strings.Replace(string(b), "\n}", "\n  include <abstractions/base>\n}", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code = sluicectl(t, nil, "audit", "--root", dest, "auth")
	if code != 1 || !strings.Contains(out, "PROBLEM") {
		t.Errorf("audit of a profile it cannot parse: exit %d\n%s", code, out)
	}
}

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("# comment\nallow alice as alice on .host\ndeny * as root on *\n"), 0o644)
	os.WriteFile(bad, []byte("allow alice as alice on .host\nallow bob\n"), 0o644)
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"policy", "check", good}, 0, "allow alice as alice on .host (" + good + ":2)", "2 rules"},
		{[]string{"policy", "check", "--json", good}, 0, `"who": "alice"`, ""},
		{[]string{"policy", "check", bad}, 1, "", bad + ":2:"},
		{[]string{"policy", "check", filepath.Join(dir, "missing")}, 1, "", "no such file"},
		{[]string{"policy", "check"}, 2, "", "want: policy check FILE"},
		{[]string{"policy", "lint", good}, 2, "", "want: policy check FILE"},
		// The shipped default is valid and allows nothing.
		{[]string{"policy", "check", filepath.Join(installtest.Root(t), "config/policy.default")}, 0, "", "0 rules"},
	} {
		var out, errb strings.Builder
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
			t.Errorf("%v: exit %d\nstdout %q (want %q)\nstderr %q (want %q)", tc.args, code, out.String(), tc.stdout, errb.String(), tc.stderr)
		}
	}
}
