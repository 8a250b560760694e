package fleet

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/fleet/fleetenv"
)

// Attacks on the fleet's admin path that fail, kept as regressions: a
// local user who is no admin, the frontend's protocol asking for admin
// calls, and a host that does not answer holding up sluicectl sessions.
func TestFleetAdminPathHostile(t *testing.T) {
	e := newFleet(t, fleetenv.Options{
		Policies: map[string]string{
			"h1": "allow alice as root on .host\n",
			"h2": "allow alice as root on .host\n",
		},
		GatewayAdmin: map[string]bool{"h1": true, "h2": true},
	})
	ctx := context.Background()
	g := e.SignIn(ctx, "alice")
	ids := map[string]string{}
	for _, n := range []string{"h1", "h2"} {
		rep, _ := openRoot(t, e, g, n)
		ids[n] = rep.Session.ID
	}
	held := func(n string) bool {
		ss, err := e.Hosts[n].Suite.Sessions(ctx)
		return err == nil && len(ss) == 1 && ss[0].ID == ids[n]
	}

	t.Run("a local user who is no admin", func(t *testing.T) {
		as := func(args ...string) (string, error) {
			cmd := exec.Command(filepath.Join(e.Bin, "sluicectl"), args...)
			cmd.Env = []string{"SLUICE_RUNTIME_DIR=" + e.GW.RunDir, "SLUICE_MANIFEST=" + filepath.Join(e.GW.RunDir, "build-ids.json"),
				"PATH=/usr/bin:/bin", "HOME=/"}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := as("sessions", "--json", "--host", "h1")
		if err == nil || strings.Contains(out, ids["h1"]) {
			t.Errorf("nobody listed h1's sessions: %v\n%s", err, out)
		}
		out, err = as("sessions", "end", "h1/"+ids["h1"])
		if err == nil || !held("h1") {
			t.Errorf("nobody ended h1/%s: %v\n%s", ids["h1"], err, out)
		}
		t.Logf("refused: %s", tail(strings.TrimSpace(out), 200))
	})

	t.Run("the frontend's protocol", func(t *testing.T) {
		raw, _ := msgpackMarshal(msg.PtyDrop{ID: ids["h1"]})
		// fleet-admin-call is no op of "web to fleet".
		_, err := callFleet(ctx, e, msg.ProtoWebToFleet, msg.OpFleetAdminCall,
			msg.FleetCall{Host: "h1", Op: msg.OpPtyDrop, Args: raw}, &msg.PtyDropReply{})
		if code(err) != rpc.CodeBadRequest {
			t.Errorf("fleet-admin-call on web to fleet: %v, want bad-request", err)
		}
		// pty-drop with no grant, and with bob's (whose session it is not).
		if err := e.Call(ctx, "h1", msg.HostGrant{}, msg.PtyStore, msg.OpPtyDrop, msg.PtyDrop{ID: ids["h1"]}, &msg.PtyDropReply{}); code(err) != msg.CodeBadGrant {
			t.Errorf("pty-drop without a host grant: %v, want bad-grant", err)
		}
		bob := e.SignIn(ctx, "bob")
		if err := e.Call(ctx, "h1", e.HostGrant(ctx, bob, "h1"), msg.PtyStore, msg.OpPtyDrop, msg.PtyDrop{ID: ids["h1"]}, &msg.PtyDropReply{}); err == nil {
			t.Errorf("bob ended alice's session on h1")
		}
		if !held("h1") {
			t.Fatal("h1 lost alice's session")
		}
	})

	t.Run("a host that does not answer", func(t *testing.T) {
		pid, err := e.Hosts["h2"].Suite.WaitChild("sluice-ptystore")
		if err != nil {
			t.Fatal(err)
		}
		syscall.Kill(pid, syscall.SIGSTOP)
		defer syscall.Kill(pid, syscall.SIGCONT)
		start := time.Now()
		out, err := e.Sluicectl("--timeout", "8s", "sessions", "--json")
		took := time.Since(start)
		t.Logf("sessions with h2's ptystore stopped: %v, exit %v", took.Round(time.Millisecond), exitCode(err))
		var rows []sessionRow
		if jerr := json.Unmarshal([]byte(out), &rows); jerr != nil {
			t.Fatalf("sessions --json: %v %v\n%s", err, jerr, out)
		}
		got := map[string]sessionRow{}
		for _, r := range rows {
			got[r.Host] = r
		}
		if exitCode(err) != 1 || got["h1"].ID != ids["h1"] || got["h2"].Error == "" {
			t.Errorf("want h1's session listed and h2 as an error row, exit 1: %v\n%s", err, out)
		}
		// Bounded by its own deadline (--timeout per call), not h2.
		if took > 20*time.Second {
			t.Errorf("sessions took %v with one host stopped", took)
		}
	})
}
