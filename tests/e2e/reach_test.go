package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
)

// callAs is asFrontend's child run with uid:gid and no supplementary
// groups: a local user who is not the frontend.
func callAs(t *testing.T, uid, gid uint32, proto, op string, args any) childResult {
	t.Helper()
	asFrontendThen(t, msg.ProtoWebToPolicy, msg.OpAllowedTargets, msg.AllowedTargets{}, nil, "") // makes childExe
	body, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(childExe, "-test.run=^$")
	cmd.Env = append(env.Env(), childEnv+"=call", "CALL_PROTO="+proto, "CALL_OP="+op,
		"CALL_ARGS="+base64.StdEncoding.EncodeToString(body))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s as uid %d: %v: %s", op, uid, err, out)
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%s: child said %q: %v", op, out, err)
	}
	return res
}

// TestWhoReachesPut: the routes into a session that policy's put opened,
// tried by everyone else. The frontend's uid speaking "policy to
// ptystore" (with policy's public build ID) or putting on its own route,
// or asking policy's "ptystore to policy" as if it were ptystore, is
// refused; a local user who is neither reaches neither socket.
func TestWhoReachesPut(t *testing.T) {
	users(t)
	g := directGrant(t, alice)
	put := msg.PtyPut{Grant: g, Session: msg.SessionInfo{ID: "0123456789abcdef0123456789abcdef", Owner: "alice",
		UnixUser: "root", Machine: msg.HostMachine, Sharing: msg.SharePrivate, PID: 1}}
	uid, gid := frontendIDs(t)
	for _, tc := range []struct {
		name      string
		uid, gid  uint32
		proto, op string
		args      any
		want      string // the code, or text of the error
	}{
		{"frontend, policy to ptystore", uid, gid, msg.ProtoPolicyToPtyStore, msg.OpPtyPut, put, "forbidden"},
		{"frontend, web to ptystore", uid, gid, msg.ProtoWebToPtyStore, msg.OpPtyPut, put, "forbidden"},
		{"frontend, ptystore to policy", uid, gid, msg.ProtoPtyStoreToPolicy, msg.OpCheckSessions, msg.CheckSessions{}, "forbidden"},
		{"local user, ptystore", 65534, 65534, msg.ProtoWebToPtyStore, msg.OpPtyList, msg.PtyList{Grant: g}, "permission denied"},
		{"local user, policy", 65534, 65534, msg.ProtoWebToPolicy, msg.OpAllowedTargets, msg.AllowedTargets{Grant: g}, "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := callAs(t, tc.uid, tc.gid, tc.proto, tc.op, tc.args)
			if res.Code != tc.want && !strings.Contains(res.Err, tc.want) {
				t.Errorf("%s %s as uid %d: code %q err %q, want %q", tc.proto, tc.op, tc.uid, res.Code, res.Err, tc.want)
			}
		})
	}
}
