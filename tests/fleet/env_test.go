package fleet

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/tests/fleet/fleetenv"
)

// env is the fleet these tests speak to as the gateway's frontend would.
type env = fleetenv.Env

func newEnv(t *testing.T, policies map[string]string) *env {
	return fleetenv.New(t, fleetenv.Options{Policies: policies})
}

func tail(s string, n int) string { return fleetenv.Tail(s, n) }

func msgpackMarshal(v any) ([]byte, error) { return msgpack.Marshal(v) }
