package ptystore

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/runner"
)

// The unit as in the runner's default config, with the callers narrowed to
// root (this test) and no grace period before a hung-up pty is dropped.
const ptystoreUnit = `{"stop_timeout": "5s", "units": [{
	"name": "ptystore",
	"exec": ["sluice-ptystore", "--hangup-grace", "0s", "--hangup", "off"],
	"accept": false,
	"notify": true,
	"fdstore_max": 64,
	"socket": {"mode": "0600"},
	"user": ["sluice-ptystore", "nobody"],
	"group": ["sluice-ptystore", "nogroup"],
	"env": {"SLUICE_ALLOW_WEB_TO_PTYSTORE": "uid:0", "SLUICE_ALLOW_ADMIN_TO_PTYSTORE": "uid:0", "SLUICE_ALLOW_POLICY_TO_PTYSTORE": "uid:0"},
	"credentials": ["grant.key"],
	"restart_sec": "100ms",
	"restart_max_sec": "1s",
	"umask": "0077"
}]}`

// TestRestartUnderRunner is the kill -9 test under the embedded runner
// (`sluice run`): its fd store keeps the pty, it restarts the helper with
// the stored fds, and the session goes on.
func TestRestartUnderRunner(t *testing.T) {
	base, err := os.MkdirTemp("", "ptystore-runner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755) // the helper may run as nobody
	bin := filepath.Join(base, "bin")
	os.Mkdir(bin, 0o755)
	copyFile(t, helperBinary(t), filepath.Join(bin, "sluice-ptystore"))
	// Stand-ins for the two callers, so the manifest names build IDs for
	// them; the test presents those IDs.
	for _, name := range []string{"sluice-frontend", "sluicectl", "sluice-policy"} {
		copyFile(t, "/bin/true", filepath.Join(bin, name))
	}

	cfg, err := runner.ParseConfig([]byte(ptystoreUnit))
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(base, "state")
	r, err := runner.New(runner.Options{
		Config: cfg, RuntimeDir: filepath.Join(base, "run"), BinDir: bin, StateDir: state,
		Log: testLog(t), Stdout: tWriter{t}, ReadyTimeout: waitLimit,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })

	key, err := grant.LoadKey(filepath.Join(state, "credentials", "grant.key"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := buildid.Load(r.ManifestPath())
	if err != nil {
		t.Fatal(err)
	}
	// ptystore asks policy on every attach: a stand-in policy helper at
	// its socket, presenting the stand-in binary's ID.
	servePolicyFor(t, filepath.Join(base, "run", "policy.sock"), m, key)
	hello := func(comp string, p msg.Protocol, role string) rpc.Hello {
		e, err := m.Lookup(comp, msg.Intent(p, role))
		if err != nil {
			t.Fatal(err)
		}
		return rpc.Hello{Intent: e.Intent, BuildID: e.BuildID}
	}
	web := &rpc.Client{Path: r.SocketPath("ptystore"), Hello: hello(msg.Frontend, webProto, "client"), Expect: hello(msg.PtyStore, webProto, "server")}
	admin := &rpc.Client{Path: r.SocketPath("ptystore"), Hello: hello(msg.Admin, adminProto, "client"), Expect: hello(msg.PtyStore, adminProto, "server")}
	pol := &rpc.Client{Path: r.SocketPath("ptystore"), Hello: hello(msg.Policy, putProto, "client"), Expect: hello(msg.PtyStore, putProto, "server")}
	alice, err := grant.Sign(key, "alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	get := func() *os.File {
		t.Helper()
		var rep msg.PtyGetReply
		fds, code := call(t, web, msg.OpPtyGet, msg.PtyGet{Grant: alice, ID: "s1"}, nil, &rep)
		if code != "" || len(fds) != 1 || rep.Mode != msg.ModeOwner {
			t.Fatalf("get: %q, %d fds, %+v", code, len(fds), rep)
		}
		return fds[0]
	}

	sh := startShell(t)
	if _, code := call(t, pol, msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: sessionInfo("s1", "alice"), Ticket: tk(t, key, sessionInfo("s1", "alice"), sh.master)}, []*os.File{sh.master}, nil); code != "" {
		t.Fatalf("put: %s", code)
	}
	sh.master.Close()
	f := get()
	converse(t, f)
	f.Close()
	name := waitFor(t, "s1 in the runner's fd store", func() []string { return r.StoredFDs("ptystore") })

	old := r.MainPID("ptystore")
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the runner restarting ptystore", func() []string {
		if p := r.MainPID("ptystore"); p != 0 && p != old {
			return []string{"restarted"}
		}
		return nil
	})
	if !sh.running() {
		t.Fatal("the shell died with the helper")
	}
	// Calls wait in the socket's backlog until the new process serves.
	var rep msg.PtyListReply
	if _, code := call(t, admin, msg.OpPtyList, msg.PtyList{}, nil, &rep); code != "" || len(rep.Sessions) != 1 || rep.Sessions[0].ID != "s1" {
		t.Fatalf("list after restart: %q %+v", code, rep)
	}
	f = get()
	converse(t, f)
	f.Close()

	// An admin drop: the helper (nobody) cannot signal the root shell, but
	// its fd and the runner's copy are the last: the pty hangs up.
	if _, code := call(t, admin, msg.OpPtyDrop, msg.PtyDrop{ID: "s1"}, nil, nil); code != "" {
		t.Fatalf("drop: %s", code)
	}
	// The runner runs in this process and reaps every child of it (it is
	// a subreaper with one wait4(-1) loop), so the shell's status may have
	// gone to it: then only its end is known, which the hangup is the only
	// cause of here.
	if sig, known := sh.exitedStatus(t); known && sig != syscall.SIGHUP {
		t.Fatalf("shell ended by %v, want SIGHUP", sig)
	}
	waitFor(t, "s1 out of the fd store", func() []string {
		if slices.Contains(r.StoredFDs("ptystore"), name[0]) {
			return nil
		}
		return []string{"gone"}
	})
}

// waitFor polls cond until it returns something; a guard against hanging,
// not a measurement.
func waitFor(t *testing.T, what string, cond func() []string) []string {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(5 * time.Millisecond) {
		if v := cond(); len(v) > 0 {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
	}
}
