// Package suite wires a sluice component into the protocol table: where
// each socket is, which binary is which component, and what hello lines a
// component sends and expects on each protocol, taken from the build
// manifest (build-ids.json).
package suite

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
)

// DefaultRuntimeDir is where sockets live under systemd.
const DefaultRuntimeDir = "/run/sluice"

// RuntimeDir is $SLUICE_RUNTIME_DIR, or DefaultRuntimeDir.
func RuntimeDir() string {
	if d := os.Getenv("SLUICE_RUNTIME_DIR"); d != "" {
		return d
	}
	return DefaultRuntimeDir
}

// SocketPath is the socket of a component: RUNTIME_DIR/NAME.sock.
func SocketPath(component string) string {
	return filepath.Join(RuntimeDir(), component+".sock")
}

// BinaryName is a component's executable file name.
func BinaryName(component string) string {
	if component == msg.Admin {
		return "sluicectl"
	}
	return "sluice-" + component
}

// Components lists every component that speaks a protocol.
func Components() []string {
	return []string{msg.Frontend, msg.Auth, msg.Policy, msg.Shell, msg.PtyStore, msg.Hangup, msg.Record, msg.Admin}
}

// FleetComponents are the fleet's (msg.FleetProtocols): in the manifest
// when their binaries are built, in no single-host unit or install list.
func FleetComponents() []string { return []string{msg.Fleet, msg.Relay} }

// ManifestPath is $SLUICE_MANIFEST, else RUNTIME_DIR/build-ids.json if it
// exists, else build-ids.json beside the running executable.
func ManifestPath() string {
	if p := os.Getenv("SLUICE_MANIFEST"); p != "" {
		return p
	}
	p := filepath.Join(RuntimeDir(), "build-ids.json")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Join(filepath.Dir(exe), "build-ids.json")
	}
	return p
}

var (
	manOnce sync.Once
	man     *buildid.Manifest
	manErr  error
)

// Manifest loads the manifest once per process.
func Manifest() (*buildid.Manifest, error) {
	manOnce.Do(func() { man, manErr = buildid.Load(ManifestPath()) })
	return man, manErr
}

// Hellos returns the lines self sends and the lines it expects from the
// peer on protocol name, from the manifest.
func Hellos(self, name string) (mine, peer rpc.Hello, err error) {
	p, ok := msg.Lookup(name)
	if !ok {
		return mine, peer, fmt.Errorf("suite: unknown protocol %q", name)
	}
	role, peerRole, peerComp := "client", "server", p.Server
	switch self {
	case p.Client:
	case p.Server:
		role, peerRole, peerComp = "server", "client", p.Client
	default:
		return mine, peer, fmt.Errorf("suite: %s does not speak %q", self, name)
	}
	m, err := Manifest()
	if err != nil {
		return mine, peer, err
	}
	mine.Intent = msg.Intent(p, role)
	if mine.BuildID, err = buildid.Self(m, self, mine.Intent); err != nil {
		return mine, peer, err
	}
	peer.Intent = msg.Intent(p, peerRole)
	e, err := m.Lookup(peerComp, peer.Intent)
	if err != nil {
		return mine, peer, fmt.Errorf("suite: %s's build ID for %q: %w", peerComp, name, err)
	}
	peer.BuildID = e.BuildID
	return mine, peer, nil
}

// Client returns an rpc client for self calling protocol name at the
// server's socket in the runtime directory.
func Client(self, name string) (*rpc.Client, error) {
	mine, peer, err := Hellos(self, name)
	if err != nil {
		return nil, err
	}
	p, _ := msg.Lookup(name)
	return &rpc.Client{Path: SocketPath(p.Server), Hello: mine, Expect: peer}, nil
}

// Route returns the server route for self answering protocol name.
func Route(self, name string, allow rpc.Allow, maxFDs int, h rpc.HandlerFunc) (rpc.Route, error) {
	mine, peer, err := Hellos(self, name)
	if err != nil {
		return rpc.Route{}, err
	}
	return rpc.Route{Client: peer, Server: mine, Allow: allow, MaxFDs: maxFDs, Handle: h}, nil
}

// BuildManifest hashes every component binary found in dir and records
// each one's intents and build IDs. Missing binaries are skipped, so a
// partial build still gets a manifest for what it has.
func BuildManifest(dir string) (*buildid.Manifest, error) {
	m := &buildid.Manifest{Version: 1}
	for _, comp := range append(Components(), FleetComponents()...) {
		path := filepath.Join(dir, BinaryName(comp))
		ident, err := buildid.Stat(path)
		if err != nil {
			if os.IsNotExist(unwrapPath(err)) {
				continue
			}
			return nil, err
		}
		type side struct{ proto, role, intent string }
		var sides []side
		var intents []string
		for _, p := range append(append([]msg.Protocol(nil), msg.Protocols...), msg.FleetProtocols...) {
			for _, role := range []string{"client", "server"} {
				if (role == "client" && p.Client == comp) || (role == "server" && p.Server == comp) {
					in := msg.Intent(p, role)
					sides = append(sides, side{p.Name, role, in})
					intents = append(intents, in)
				}
			}
		}
		ids, err := buildid.OfFile(path, intents...)
		if err != nil {
			return nil, err
		}
		m.Binaries = append(m.Binaries, buildid.Binary{Component: comp, File: BinaryName(comp), Identity: ident})
		for i, s := range sides {
			m.Entries = append(m.Entries, buildid.Entry{Component: comp, Protocol: s.proto, Role: s.role, Intent: s.intent, BuildID: ids[i]})
		}
	}
	return m, nil
}

func unwrapPath(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		next := u.Unwrap()
		if next == nil {
			return err
		}
		err = next
	}
}
