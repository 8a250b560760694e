package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/msg"
	"sluice/suite"
)

// TestFleetUnits checks the gateway's fleet units in the shape of the
// helpers' (TestCallers) for msg.FleetProtocols: the socket admits the
// frontend's group and root, the helper's --allow names exactly the
// protocols' clients, and nothing of the single-host suite starts it.
// The host side is the drop-ins in fleet-host/: the relay account owns
// policy.sock and ptystore.sock, and is in no group of theirs.
func TestFleetUnits(t *testing.T) {
	sock, svc := parse(t, "sluice-fleet.socket"), parse(t, "sluice-fleet.service")
	for k, want := range map[string]string{
		"ListenStream":    suite.DefaultRuntimeDir + "/" + msg.Fleet + ".sock",
		"PassCredentials": "yes",
		"SocketUser":      "root",
		"SocketGroup":     "sluice-web",
		"SocketMode":      "0660",
		"Accept":          "no", // its ssh children outlive a call
	} {
		if got := sock.Value("Socket", k); got != want {
			t.Errorf("sluice-fleet.socket: %s=%q, want %q", k, got, want)
		}
	}
	argv, err := audit.SplitCommand(svc.Value("Service", "ExecStart"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "/usr/libexec/sluice/" + suite.BinaryName(msg.Fleet); argv[0] != want {
		t.Errorf("ExecStart runs %s, want %s", argv[0], want)
	}
	for k, want := range map[string]string{"DynamicUser": "yes", "StateDirectory": "sluice-fleet", "StateDirectoryMode": "0700", "NoNewPrivileges": "yes", "ProtectSystem": "strict"} {
		if got := svc.Value("Service", k); got != want {
			t.Errorf("sluice-fleet.service: %s=%q, want %q", k, got, want)
		}
	}
	allows := audit.Allows(argv)
	frontend := parse(t, "sluice-frontend.service")
	var frontendGroups []string
	for _, g := range frontend.Values("Service", "SupplementaryGroups") {
		frontendGroups = append(frontendGroups, strings.Fields(g)...)
	}
	for _, p := range msg.FleetProtocols {
		if p.Server != msg.Fleet {
			continue
		}
		want := "group:sluice-web"
		if p.Client == msg.Admin {
			want = "uid:0"
		}
		if got := allows[p.Name]; got != want {
			t.Errorf("sluice-fleet: %q allows %q, want %q", p.Name, got, want)
		}
		if p.Client == msg.Frontend && !slices.Contains(frontendGroups, sock.Value("Socket", "SocketGroup")) {
			t.Errorf("the frontend speaks %q but is not in fleet.sock's group", p.Name)
		}
	}
	if len(allows) != 2 {
		t.Errorf("sluice-fleet allows %v, want the two fleet protocols it serves", allows)
	}
	target := parse(t, "sluice.target")
	if strings.Contains(strings.Join(target.Values("Unit", "Wants"), " "), "sluice-fleet") {
		t.Error("sluice.target starts the fleet helper: a single host must not run it")
	}

	// Hosts: the relay reaches policy and ptystore as their sockets'
	// owner, so it needs none of their groups (sluice-web would let it
	// pass "web to auth" and "web to ptystore").
	for _, p := range msg.FleetProtocols {
		if p.Client != msg.Relay {
			continue
		}
		dropin := parse(t, filepath.Join("fleet-host", suite.BinaryName(p.Server)+".socket.conf"))
		if got := dropin.Value("Socket", "SocketUser"); got != "sluice-relay" {
			t.Errorf("fleet-host drop-in for %s.sock: SocketUser=%q, want sluice-relay", p.Server, got)
		}
		base := parse(t, suite.BinaryName(p.Server)+".socket")
		if base.Value("Socket", "SocketMode") != "0660" {
			t.Errorf("%s.socket: mode %q: the owner's bits are the relay's way in", p.Server, base.Value("Socket", "SocketMode"))
		}
	}
}

// TestFleetSysusers creates the relay account with the real
// systemd-sysusers beside the suite's, and checks it is in no group
// that opens a helper socket.
func TestFleetSysusers(t *testing.T) {
	need(t, "systemd-sysusers")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	var confs []string
	for _, f := range []string{"sluice.sysusers", "sluice-fleet.sysusers"} {
		p, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, p)
	}
	out, err := exec.Command("systemd-sysusers", append([]string{"--root=" + root}, confs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "Creating ") {
			t.Errorf("systemd-sysusers said: %s", line)
		}
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	var relay []string
	for _, l := range strings.Split(string(passwd), "\n") {
		if strings.HasPrefix(l, "sluice-relay:") {
			relay = strings.Split(l, ":")
		}
	}
	if len(relay) != 7 || relay[6] != "/bin/sh" {
		t.Fatalf("relay account %q: want one with a shell (sshd runs the forced command through it)", relay)
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	for _, l := range strings.Split(string(group), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 4 && slices.Contains(strings.Split(f[3], ","), "sluice-relay") {
			t.Errorf("the relay account is in %s", f[0])
		}
	}
}
