package fleet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sluice/tests/fleet/fleetenv"
)

// TestGatewayRestartKeepsSessions: a shell on h1 opened through the
// gateway's page and typed into; the gateway's whole suite stops (its
// runner with auth and the frontend, and the fleet helper with every ssh
// stream) while the shell writes; the gateway starts again, the page signs
// in again and reattaches: the same shell (a variable set before) and the
// output written while the gateway was down are there. h1's ptystore held
// the session throughout.
func TestGatewayRestartKeepsSessions(t *testing.T) {
	allow := "allow alice as root on .host\n"
	e := newFleet(t, fleetenv.Options{Page: true, Policies: map[string]string{"h1": allow, "h2": allow, "h3": allow}})
	ctx := context.Background()
	a := pageUser(t, e, "alice")
	b, id, err := remotePage(e, a, "h1")
	if err != nil {
		t.Fatal(err)
	}
	// The flag file is made once the gateway is down; the shell then
	// writes, and removes the flag to say it has.
	flag := filepath.Join(e.Dir, "gateway-down")
	if err := b.Run(`X=kept-$((6*7)); echo "x=$X"`, "x=kept-42"); err != nil {
		t.Fatal(err)
	}
	if err := b.Run(`(while [ ! -e `+flag+` ]; do sleep 0.05; done; echo "while-away-$((3*3))"; rm -f `+flag+`) & echo "bg-$((2*2))"`, "bg-4"); err != nil {
		t.Fatal(err)
	}

	e.StopGateway()
	b.Close()
	ss, err := e.Hosts["h1"].Suite.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].ID != id {
		t.Fatalf("h1's ptystore with the gateway down holds %+v (%v), want %s", ss, err, id)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(flag); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell on h1 did not write while the gateway was down")
		}
		time.Sleep(20 * time.Millisecond)
	}

	e.StartGateway()
	// The restarted runner listens on a port of its own; a real gateway
	// keeps its address, and the browser comes back to the same origin.
	a.Origin = e.GW.Origin
	b, err = signedIn(e, a)
	if err != nil {
		t.Fatalf("sign in again: %v", err)
	}
	defer b.Close()
	got, err := openOn(b, "h1", id)
	if err != nil {
		t.Fatalf("reattach: %v", err)
	}
	if got != id {
		t.Fatalf("reattached to %s, want %s", got, id)
	}
	if _, err := b.Until("while-away-9"); err != nil {
		t.Fatalf("the output written while the gateway was down: %v", err)
	}
	if err := b.Run(`echo "x=$X-again"`, "x=kept-42-again"); err != nil {
		t.Fatalf("the same shell: %v", err)
	}
	// The other hosts work through the restarted gateway as well.
	b2, _, err := remotePage(e, a, "h2")
	if err != nil {
		t.Fatalf("a new session on h2 after the restart: %v", err)
	}
	b2.Close()
}
