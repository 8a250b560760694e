package shell_test

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/shell"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/rpctest"
	"sluice/tests/ptytest"
)

// serve runs a shell handler on a real socket with made-up build IDs and
// returns a client speaking as the policy helper.
func serve(t *testing.T, b shell.Backend) *rpc.Client {
	t.Helper()
	return serveHandler(t, &shell.Handler{Backend: b})
}

func serveHandler(t *testing.T, h *shell.Handler) *rpc.Client {
	t.Helper()
	r := rpctest.Route(msg.ProtoPolicyToShell, rpc.Allow{UIDs: []uint32{0}}, 0, optable.HandlerOf(h.Tables(), msg.ProtoPolicyToShell))
	return rpctest.Client(rpctest.Serve(t, &rpc.Server{Name: "shell", Routes: []rpc.Route{r}}, "", 0), r)
}

func request(t *testing.T, op string, args any) msg.Request {
	t.Helper()
	b, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Request{Op: op, Args: b}
}

func TestHandlerOpensShell(t *testing.T) {
	requireRoot(t)
	cl := serve(t, embedded())
	var rep msg.OpenShellReply
	fds, err := cl.Call(context.Background(), request(t, msg.OpOpenShell, msg.OpenShell{
		Machine: msg.HostMachine, User: "root", Args: []string{"/bin/sh"}, Requester: "alice",
	}), nil, &rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 1 {
		t.Fatalf("%d fds, want 1", len(fds))
	}
	if id, err := hex.DecodeString(rep.SessionID); err != nil || len(id) != 16 {
		t.Errorf("session id %q, want 16 bytes in hex", rep.SessionID)
	}
	if rep.PID <= 0 {
		t.Errorf("pid %d", rep.PID)
	}
	checkMasterFlags(t, fds[0])
	term, err := ptytest.New(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	expect(t, term, `echo he''llo`, "hello")
}

func TestHandlerErrors(t *testing.T) {
	cl := serve(t, embedded())
	for _, tc := range []struct {
		name string
		req  any
		code string
		text string
	}{
		{"unknown op", request(t, "open-sesame", msg.OpenShell{}), rpc.CodeBadRequest, `unknown op "open-sesame"`},
		{"undecodable args", msg.Request{Op: msg.OpOpenShell, Args: []byte{0xc1}}, rpc.CodeBadRequest, "undecodable"},
		{"bad user", request(t, msg.OpOpenShell, msg.OpenShell{Machine: msg.HostMachine, User: "-oops"}), rpc.CodeBadRequest, "invalid unix user name"},
		{"relative command", request(t, msg.OpOpenShell, msg.OpenShell{Machine: msg.HostMachine, User: "root", Args: []string{"sh"}}), rpc.CodeBadRequest, "absolute"},
		{"no machined", request(t, msg.OpOpenShell, msg.OpenShell{Machine: "web1", User: "root"}), msg.CodeFailed, "no machined"},
		{"no such user", request(t, msg.OpOpenShell, msg.OpenShell{Machine: msg.HostMachine, User: "no-such-user-sluice"}), msg.CodeFailed, "no such unix user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := cl.Call(context.Background(), tc.req, nil, &msg.OpenShellReply{})
			if len(fds) != 0 {
				t.Errorf("%d fds on an error", len(fds))
			}
			if rpc.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v, want code %s mentioning %q", err, tc.code, tc.text)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := msg.OpenShell{Machine: msg.HostMachine, User: "alice"}
	with := func(f func(*msg.OpenShell)) msg.OpenShell { r := ok; f(&r); return r }
	long := strings.Repeat("a", shell.MaxArgLen+1)
	for _, tc := range []struct {
		name string
		req  msg.OpenShell
		want string // "" = valid
	}{
		{"login shell", ok, ""},
		{"container", with(func(r *msg.OpenShell) { r.Machine = "web-1.example" }), ""},
		{"machine account", with(func(r *msg.OpenShell) { r.User = "host$" }), ""},
		{"command", with(func(r *msg.OpenShell) { r.Args = []string{"/usr/bin/top", "-d", "5"} }), ""},
		{"env", with(func(r *msg.OpenShell) { r.Env = []string{"TERM=xterm", "EMPTY="} }), ""},
		{"empty user", with(func(r *msg.OpenShell) { r.User = "" }), "user"},
		{"user as option", with(func(r *msg.OpenShell) { r.User = "-root" }), "user"},
		{"user with slash", with(func(r *msg.OpenShell) { r.User = "../root" }), "user"},
		{"user with colon", with(func(r *msg.OpenShell) { r.User = "a:b" }), "user"},
		{"dollar inside", with(func(r *msg.OpenShell) { r.User = "a$b" }), "user"},
		{"empty machine", with(func(r *msg.OpenShell) { r.Machine = "" }), "machine"},
		{"machine empty label", with(func(r *msg.OpenShell) { r.Machine = "a..b" }), "machine"},
		{"machine as option", with(func(r *msg.OpenShell) { r.Machine = "-H" }), "machine"},
		{"machine with slash", with(func(r *msg.OpenShell) { r.Machine = "a/b" }), "machine"},
		{"relative command", with(func(r *msg.OpenShell) { r.Args = []string{"bash"} }), "absolute"},
		{"NUL in arg", with(func(r *msg.OpenShell) { r.Args = []string{"/bin/sh", "a\x00b"} }), "NUL"},
		{"long arg", with(func(r *msg.OpenShell) { r.Args = []string{"/bin/sh", long} }), "too long"},
		{"too many args", with(func(r *msg.OpenShell) { r.Args = append([]string{"/bin/sh"}, make([]string, msg.MaxArgs)...) }), "args"},
		{"env without =", with(func(r *msg.OpenShell) { r.Env = []string{"TERM"} }), "KEY=VALUE"},
		{"env empty key", with(func(r *msg.OpenShell) { r.Env = []string{"=x"} }), "KEY=VALUE"},
		{"env NUL", with(func(r *msg.OpenShell) { r.Env = []string{"A=\x00"} }), "KEY=VALUE"},
		{"too much env", with(func(r *msg.OpenShell) { r.Env = make([]string, shell.MaxEnv+1) }), "env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := shell.Validate(tc.req)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	old := shell.BootedMarker
	t.Cleanup(func() { shell.BootedMarker = old })
	for _, tc := range []struct {
		kind, marker, want string
	}{
		{"machined", "", "machined"},
		{"embedded", dir, "embedded"},
		{"auto", dir, "machined"},
		{"", dir, "machined"},
		{"auto", filepath.Join(dir, "absent"), "embedded"},
		{"fork", dir, ""},
	} {
		shell.BootedMarker = tc.marker
		got, err := shell.Resolve(tc.kind)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("Resolve(%q) with marker %q = %q, %v; want %q", tc.kind, tc.marker, got, err, tc.want)
		}
	}
}
