package fleet

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/fleet/fleetenv"
)

type sessionRow struct {
	Host  string `json:"host"`
	Error string `json:"error"`
	ID    string `json:"ID"`
	Owner string `json:"Owner"`
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// sluicectl sessions on the gateway lists every host's sessions and ends
// a remote one through the fleet helper, with an admin host grant from
// the gateway's auth; each host decides: h1 and h2 take the gateway's
// admin calls (--gateway-admin), h3 does not and is listed with its
// refusal while the others still show.
func TestFleetAdminSessions(t *testing.T) {
	e := newFleet(t, fleetenv.Options{
		Policies: map[string]string{
			"h1": "allow alice as root on .host\n",
			"h2": "allow alice as root on .host\n",
			"h3": "allow alice as root on .host\n",
		},
		GatewayAdmin: map[string]bool{"h1": true, "h2": true},
	})
	ctx := context.Background()
	g := e.SignIn(ctx, "alice")
	ids := map[string]string{}
	for _, n := range []string{"h1", "h2", "h3"} {
		rep, f := openRoot(t, e, g, n)
		typeAndSee(t, f, "echo up-$((2*3))\n", "up-6")
		ids[n] = rep.Session.ID
	}

	start := time.Now()
	out, err := e.Sluicectl("sessions", "--json")
	t.Logf("sessions --json over three hosts: %v", time.Since(start))
	if exitCode(err) != 1 {
		t.Fatalf("sessions with h3 refusing: exit %v, want 1 (a host did not answer)\n%s", err, out)
	}
	var rows []sessionRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	got := map[string]sessionRow{}
	for _, r := range rows {
		got[r.Host] = r
	}
	for _, n := range []string{"h1", "h2"} {
		if r := got[n]; r.ID != ids[n] || r.Owner != "alice" || r.Error != "" {
			t.Errorf("%s row %+v, want session %s of alice", n, r, ids[n])
		}
	}
	if r := got["h3"]; !strings.Contains(r.Error, "gateway-admin") || r.ID != "" {
		t.Errorf("h3 row %+v, want its refusal naming --gateway-admin", r)
	}
	if len(rows) != 3 {
		t.Errorf("%d rows, want 3: %s", len(rows), out)
	}

	text, err := e.Sluicectl("sessions")
	t.Logf("sluicectl sessions:\n%s", text)
	if exitCode(err) != 1 || !strings.Contains(text, "HOST") || !strings.Contains(text, "h3\t") && !strings.Contains(text, "h3 ") {
		t.Errorf("sessions (text): %v\n%s", err, text)
	}

	out, err = e.Sluicectl("sessions", "--host", "h2", "--json")
	rows = nil
	json.Unmarshal([]byte(out), &rows)
	if err != nil || len(rows) != 1 || rows[0].Host != "h2" || rows[0].ID != ids["h2"] {
		t.Fatalf("sessions --host h2: %v %+v\n%s", err, rows, out)
	}

	t.Run("end a remote session", func(t *testing.T) {
		out, err := e.Sluicectl("sessions", "end", "h1/"+ids["h1"])
		if err != nil || !strings.Contains(out, "ended h1/"+ids["h1"]) {
			t.Fatalf("sessions end h1/ID: %v\n%s", err, out)
		}
		if ss, err := e.Hosts["h1"].Suite.Sessions(ctx); err != nil || len(ss) != 0 {
			t.Fatalf("h1 still holds %+v (%v)", ss, err)
		}
		// --host names the host too; a session that is not there is the
		// host's not-found.
		out, err = e.Sluicectl("sessions", "end", "--host", "h2", "no-such-session")
		if exitCode(err) != 1 || !strings.Contains(out, msg.CodeNotFound) {
			t.Fatalf("end of an unknown session on h2: %v\n%s", err, out)
		}
	})

	t.Run("a host that does not take the gateway's admins", func(t *testing.T) {
		out, err := e.Sluicectl("sessions", "end", "h3/"+ids["h3"])
		if exitCode(err) != 1 || !strings.Contains(out, rpc.CodeForbidden) {
			t.Fatalf("end on h3: %v\n%s", err, out)
		}
		if ss, _ := e.Hosts["h3"].Suite.Sessions(ctx); len(ss) != 1 {
			t.Fatalf("h3 holds %+v, want its session kept", ss)
		}
	})

	t.Run("hostile: a user's host grant as an admin's", func(t *testing.T) {
		hg := e.HostGrant(ctx, g, "h2")
		raw, _ := msgpackMarshal(msg.PtyList{})
		// As sent: the fleet helper wants an admin grant.
		_, err := callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetAdminCall,
			msg.FleetCall{Host: "h2", Op: msg.OpPtyList, Args: raw, HostGrant: hg}, &msg.PtyListReply{})
		if code(err) != rpc.CodeBadRequest {
			t.Fatalf("a user's grant on fleet-admin-call: %v, want bad-request", err)
		}
		// Flagged admin (what a compromised frontend or fleet helper
		// could do): the host finds the signature broken.
		hg.Admin = true
		_, err = callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetAdminCall,
			msg.FleetCall{Host: "h2", Op: msg.OpPtyList, Args: raw, HostGrant: hg}, &msg.PtyListReply{})
		if code(err) != msg.CodeBadGrant {
			t.Fatalf("a user's grant flagged admin: %v, want bad-grant", err)
		}
	})

	t.Run("hostile: admin grants on the web protocol or another host", func(t *testing.T) {
		var ag msg.HostGrantReply
		cl, err := e.GW.Client(msg.Admin, msg.ProtoAdminToAuth)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := msgpackMarshal(msg.HostAdminGrantRequest{Host: "h1"})
		if _, err := cl.Call(ctx, msg.Request{Op: msg.OpHostAdminGrant, Args: raw}, nil, &ag); err != nil {
			t.Fatal(err)
		}
		var l msg.PtyListReply
		if err := e.Call(ctx, "h2", ag.HostGrant, msg.PtyStore, msg.OpPtyList, msg.PtyList{}, &l); code(err) != rpc.CodeForbidden {
			t.Fatalf("an admin grant on web to fleet: %v, want forbidden", err)
		}
		pl, _ := msgpackMarshal(msg.PtyList{})
		_, err = callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetAdminCall,
			msg.FleetCall{Host: "h2", Op: msg.OpPtyList, Args: pl, HostGrant: ag.HostGrant}, &l)
		if code(err) != msg.CodeBadGrant {
			t.Fatalf("h1's admin grant on h2: %v, want bad-grant", err)
		}
		// Only list and end: not attaching.
		get, _ := msgpackMarshal(msg.PtyGet{ID: ids["h2"]})
		_, err = callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetAdminCall,
			msg.FleetCall{Host: "h1", Op: msg.OpPtyGet, Args: get, HostGrant: ag.HostGrant}, &l)
		if code(err) != rpc.CodeBadRequest {
			t.Fatalf("pty-get with an admin grant: %v, want bad-request", err)
		}
	})
}
