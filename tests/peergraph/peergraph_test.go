// Package peergraph_test holds the test that ties together the four
// spellings of who may call whom: msg.Protocols (and msg.FleetProtocols),
// the --allow flags and socket permissions of the systemd units, the
// runner's default config, and the AppArmor socket rules. Each is read
// from its file as installed or embedded; a protocol added, renamed or
// dropped in one and not the others fails here.
package peergraph_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/msg"
	"sluice/suite"
)

const root = "../.."

// servers are the components with a socket, read from msg: the suite's
// helpers and the fleet's gateway helper, so a helper added to msg must
// have its unit, runner entry and profile. The frontend listens on TCP.
var servers = func() []string {
	var s []string
	for _, p := range append(slices.Clone(msg.Protocols), msg.FleetProtocols...) {
		if !slices.Contains(s, p.Server) {
			s = append(s, p.Server)
		}
	}
	return s
}()

// graph is one spelling: protocol name -> "client -> server".
type graph map[string]string

func edge(client, server string) string { return client + " -> " + server }

// want is msg's spelling, restricted by keep.
func want(keep func(msg.Protocol) bool) graph {
	g := graph{}
	for _, p := range append(slices.Clone(msg.Protocols), msg.FleetProtocols...) {
		if keep(p) {
			g[p.Name] = edge(p.Client, p.Server)
		}
	}
	return g
}

// compare reports every protocol the two spellings disagree on.
func compare(t *testing.T, where string, got, want graph) {
	t.Helper()
	var names []string
	for n := range got {
		names = append(names, n)
	}
	for n := range want {
		if _, ok := got[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		g, w := got[n], want[n]
		switch {
		case g == w:
		case w == "":
			t.Errorf("%s: %q (%s) is not a protocol of msg", where, n, g)
		case g == "":
			t.Errorf("%s: no %q (%s), which msg has", where, n, w)
		default:
			t.Errorf("%s: %q is %s, msg says %s", where, n, g, w)
		}
	}
}

func unit(t *testing.T, name string) *audit.Unit {
	t.Helper()
	u, err := audit.ParseUnitFile(filepath.Join(root, "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// serviceOf is the service unit of a component, a template for Accept=yes.
func serviceOf(comp string) string {
	bin := suite.BinaryName(comp)
	if _, err := os.Stat(filepath.Join(root, "systemd", bin+"@.service")); err == nil {
		return bin + "@.service"
	}
	return bin + ".service"
}

// TestSystemdUnits: each helper's --allow flags name exactly the
// protocols msg gives it as server (the relay's, which an admin adds on a
// fleet host, aside), and each client's unit can pass the server socket's
// file permissions (SocketUser, SocketGroup).
func TestSystemdUnits(t *testing.T) {
	got := graph{}
	groups := map[string][]string{} // component -> its unit's groups
	users := map[string]string{}
	for _, comp := range append(slices.Clone(servers), msg.Frontend) {
		svc := unit(t, serviceOf(comp))
		users[comp] = svc.Value("Service", "User")
		if g := svc.Value("Service", "Group"); g != "" {
			groups[comp] = append(groups[comp], g)
		}
		for _, g := range svc.Values("Service", "SupplementaryGroups") {
			groups[comp] = append(groups[comp], strings.Fields(g)...)
		}
		if comp == msg.Frontend {
			continue
		}
		argv, err := audit.SplitCommand(svc.Value("Service", "ExecStart"))
		if err != nil {
			t.Fatal(err)
		}
		for name := range audit.Allows(argv) {
			client := "?"
			if p, ok := msg.Lookup(name); ok {
				client = p.Client
			}
			got[name] = edge(client, comp)
		}
	}
	compare(t, "systemd --allow", got, want(func(p msg.Protocol) bool { return p.Client != msg.Relay }))

	for _, p := range append(slices.Clone(msg.Protocols), msg.FleetProtocols...) {
		if p.Client == msg.Admin || p.Client == msg.Relay {
			continue // root passes any permission; the relay's are fleet-host drop-ins
		}
		sock := unit(t, suite.BinaryName(p.Server)+".socket")
		owner, group := sock.Value("Socket", "SocketUser"), sock.Value("Socket", "SocketGroup")
		if users[p.Client] != owner && !slices.Contains(groups[p.Client], group) {
			t.Errorf("%s: %s's socket is %s:%s, and %s's unit (user %s, groups %v) is neither",
				p.Name, p.Server, owner, group, p.Client, users[p.Client], groups[p.Client])
		}
	}
}

// runnerUnit is the part of runner/default.json this test reads.
type runnerUnit struct {
	Name   string            `json:"name"`
	User   string            `json:"user"`
	Env    map[string]string `json:"env"`
	Groups []string          `json:"supplementary_groups"`
	Socket *struct {
		User  string `json:"user"`
		Group string `json:"group"`
	} `json:"socket"`
}

// TestRunnerConfig: the runner's default config gives each helper a
// SLUICE_ALLOW_* variable for exactly the protocols msg gives it, each
// admitting that protocol's client, and each client can open the server's
// socket. The fleet is not part of the runner's suite.
func TestRunnerConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "runner", "default.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Units []runnerUnit `json:"units"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	units := map[string]runnerUnit{}
	for _, u := range cfg.Units {
		units[u.Name] = u
	}
	got := graph{}
	specs := map[string]string{}
	for _, u := range cfg.Units {
		for k, spec := range u.Env {
			rest, ok := strings.CutPrefix(k, "SLUICE_ALLOW_")
			if !ok {
				continue
			}
			name := strings.ToLower(strings.ReplaceAll(rest, "_", " "))
			client := "?"
			if p, ok := msg.Lookup(name); ok {
				client = p.Client
			}
			got[name], specs[name] = edge(client, u.Name), spec
		}
	}
	compare(t, "runner/default.json", got, want(func(p msg.Protocol) bool {
		_, ok := units[p.Server]
		return ok && p.Client != msg.Relay
	}))

	for _, p := range msg.Protocols {
		spec, ok := specs[p.Name]
		if !ok {
			continue // reported above
		}
		client, isUnit := units[p.Client]
		var wantSpec string
		switch {
		case p.Client == msg.Admin:
			wantSpec = "uid:0,uid:${uid}" // root, and the user running the suite
		case isUnit && client.User == "root":
			wantSpec = "uid:0"
		default:
			wantSpec = fmt.Sprintf("uid:${uid:%s}", p.Client)
		}
		if spec != wantSpec {
			t.Errorf("runner/default.json: %s allows %q, want %q", p.Name, spec, wantSpec)
		}
		if p.Client == msg.Admin || client.User == "root" {
			continue
		}
		sock := units[p.Server].Socket
		if sock == nil {
			t.Errorf("runner/default.json: %s has no socket for %s", p.Server, p.Name)
			continue
		}
		if sock.User != fmt.Sprintf("${uid:%s}", p.Client) && sock.Group != fmt.Sprintf("${gid:%s}", p.Client) &&
			(sock.Group == "" || !slices.Contains(client.Groups, sock.Group)) {
			t.Errorf("runner/default.json: %s: %s's socket (user %s, group %s) does not admit %s (groups %v)",
				p.Name, p.Server, sock.User, sock.Group, p.Client, client.Groups)
		}
	}
}

var sockRule = regexp.MustCompile(`^\s*/run/sluice/([a-z]+)\.sock\s`)

// TestAppArmorProfiles: each profile opens its own socket if it serves
// one, and the sockets of exactly the servers msg lets it call.
func TestAppArmorProfiles(t *testing.T) {
	for _, comp := range append(slices.Clone(servers), msg.Frontend) {
		path := filepath.Join(root, "apparmor", "usr.libexec.sluice."+suite.BinaryName(comp))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			if m := sockRule.FindStringSubmatch(line); m != nil {
				got[m[1]] = true
			}
		}
		wantSocks := map[string]bool{}
		for _, p := range append(slices.Clone(msg.Protocols), msg.FleetProtocols...) {
			if p.Client == comp {
				wantSocks[p.Server] = true
			}
			if p.Server == comp {
				wantSocks[comp] = true
			}
		}
		for s := range got {
			if !wantSocks[s] {
				t.Errorf("%s: opens %s.sock, but msg has no protocol of %s to %s", filepath.Base(path), s, comp, s)
			}
		}
		for s := range wantSocks {
			if !got[s] {
				t.Errorf("%s: no rule for %s.sock, which msg has %s speak to", filepath.Base(path), s, comp)
			}
		}
	}
}
