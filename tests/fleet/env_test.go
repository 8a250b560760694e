package fleet

import (
	"context"
	"os"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/tests/fleet/fleetenv"
)

// env is the fleet these tests speak to as the gateway's frontend would.
type env = fleetenv.Env

// newFleet is fleetenv.New whose logs a failed test prints; it registers
// the print after the fleet's own teardown, so it runs first.
func newFleet(tb testing.TB, o fleetenv.Options) *env {
	e := fleetenv.New(tb, o)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Log(e.Logs())
		}
	})
	return e
}

func newEnv(t *testing.T, policies map[string]string) *env {
	return newFleet(t, fleetenv.Options{Policies: policies})
}

// openRoot opens a root shell on host with a host grant from g, its pty
// closed when the test ends.
func openRoot(tb testing.TB, e *env, g msg.Grant, host string) (msg.FleetOpenReply, *os.File) {
	tb.Helper()
	ctx := context.Background()
	rep, f, err := e.Open(ctx, host, e.HostGrant(ctx, g, host), msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root"})
	if err != nil {
		tb.Fatalf("%s: open: %v", host, err)
	}
	tb.Cleanup(func() { f.Close() })
	return rep, f
}

func tail(s string, n int) string { return fleetenv.Tail(s, n) }

func msgpackMarshal(v any) ([]byte, error) { return msgpack.Marshal(v) }
