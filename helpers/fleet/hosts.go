package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sluice/internal/names"
	"sluice/msg"
)

// Files in the fleet directory. Only the fleet helper's user reads the
// key; sluicectl (root) writes hosts.json and known_hosts.
const (
	HostsFile      = "hosts.json"
	KnownHostsFile = "known_hosts"
	KeyFile        = "id_ed25519"
	DefaultUser    = "sluice-relay"
	DefaultDir     = "/var/lib/sluice-fleet"
)

// Hosts is hosts.json.
type Hosts struct {
	Hosts []msg.FleetHost `json:"hosts"`
}

// ValidHost checks one entry: a machine-like name (not .host), an address
// of host-name characters, a port, a unix user name.
func ValidHost(h msg.FleetHost) error {
	if !names.Machine(h.Name) || h.Name == msg.HostMachine {
		return fmt.Errorf("fleet: invalid host name %q", h.Name)
	}
	if h.Address == "" || len(h.Address) > 255 || h.Address[0] == '-' {
		return fmt.Errorf("fleet: invalid address %q", h.Address)
	}
	for _, c := range h.Address {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '_') {
			return fmt.Errorf("fleet: invalid address %q", h.Address)
		}
	}
	if h.Port <= 0 || h.Port > 65535 {
		return fmt.Errorf("fleet: invalid port %d", h.Port)
	}
	if !names.UnixUser(h.User) {
		return fmt.Errorf("fleet: invalid relay user %q", h.User)
	}
	return nil
}

// LoadHosts reads dir/hosts.json; a missing file is no hosts.
func LoadHosts(dir string) (Hosts, error) {
	var hs Hosts
	b, err := os.ReadFile(filepath.Join(dir, HostsFile))
	if errors.Is(err, os.ErrNotExist) {
		return hs, nil
	}
	if err != nil {
		return hs, fmt.Errorf("fleet: hosts: %w", err)
	}
	if len(b) > 1<<20 {
		return hs, errors.New("fleet: hosts.json over 1 MiB")
	}
	if err := json.Unmarshal(b, &hs); err != nil {
		return hs, fmt.Errorf("fleet: hosts.json: %w", err)
	}
	for _, h := range hs.Hosts {
		if err := ValidHost(h); err != nil {
			return Hosts{}, err
		}
	}
	return hs, nil
}

// Lookup finds a host by name.
func (hs Hosts) Lookup(name string) (msg.FleetHost, bool) {
	for _, h := range hs.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return msg.FleetHost{}, false
}

// Save writes dir/hosts.json atomically (0644: names and addresses only).
func (hs Hosts) Save(dir string) error {
	b, err := json.MarshalIndent(hs, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, HostsFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("fleet: hosts: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, HostsFile))
}
