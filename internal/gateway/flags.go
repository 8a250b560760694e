package gateway

import (
	"flag"
	"fmt"
	"log/slog"

	"sluice/internal/grant"
	"sluice/internal/hostgrant"
)

// Flags are a host helper's fleet flags: with neither set the helper
// serves no gateway route, as before there was a fleet.
type Flags struct {
	Host string
	Key  string
}

// Register adds --fleet-host and --gateway-key.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Host, "fleet-host", "", "this host's name in a sluice fleet; with --gateway-key, serve the gateway route to the relay account")
	fs.StringVar(&f.Key, "gateway-key", "", "the fleet gateway's public key file (sluicectl hosts add prints it)")
}

// Adapter returns the route adapter, nil when the host is in no fleet.
func (f *Flags) Adapter(key grant.Key, ops map[string]bool, log *slog.Logger) (*Adapter, error) {
	if f.Host == "" && f.Key == "" {
		return nil, nil
	}
	if f.Host == "" || f.Key == "" {
		return nil, fmt.Errorf("gateway: --fleet-host and --gateway-key go together")
	}
	pub, err := hostgrant.LoadPublic(f.Key)
	if err != nil {
		return nil, err
	}
	return &Adapter{Host: f.Host, Gateway: pub, GrantKey: key, Ops: ops, Log: log}, nil
}
