package main

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/helpers/fleet"
	"sluice/internal/hostgrant"
)

func TestHostsAddListRemove(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(nil)
	gw := filepath.Join(dir, "gateway.pub")
	os.WriteFile(gw, []byte(hostgrant.FormatPublic(pub)), 0o644)
	os.WriteFile(filepath.Join(dir, fleet.KeyFile+".pub"), []byte("ssh-ed25519 AAAAfleet sluice-fleet@gw\n"), 0o644)
	sluicectl := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := run(append([]string{"hosts"}, args...), &out, &errb)
		return out.String() + errb.String(), code
	}
	common := []string{"--fleet-dir", dir, "--gateway-pub", gw}
	add := func(args ...string) []string { return append(append([]string{"add"}, common...), args...) }
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no pin", add("web1", "10.0.0.2"), 2, "host's public key"},
		{"bad name", add("--host-key", "ssh-ed25519 AAAAh1", ".host", "10.0.0.2"), 2, "invalid host name"},
		{"bad address", add("--host-key", "ssh-ed25519 AAAAh1", "web1", "-oProxyCommand=x"), 2, "invalid address"},
		{"add", add("--host-key", "ssh-ed25519 AAAAh1 root@web1", "web1", "10.0.0.2"), 0,
			`restrict,command="/usr/libexec/sluice/sluice-relay --host web1" ssh-ed25519 AAAAfleet`},
		{"add again replaces", add("--port", "2222", "--host-key", "ssh-ed25519 AAAAh1new", "web1", "10.0.0.3"), 0, "sluice-gateway-ed25519 "},
		{"add another", add("--host-key", "ssh-ed25519 AAAAh2", "web2", "10.0.0.4"), 0, "--fleet-host web2"},
		{"list", []string{"list", "--fleet-dir", dir}, 0, "web1  10.0.0.3  2222"},
		{"remove", []string{"remove", "--fleet-dir", dir, "web1"}, 0, "removed web1"},
		{"remove unknown", []string{"remove", "--fleet-dir", dir, "web1"}, 3, "no host"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, code := sluicectl(c.args...)
			if code != c.code || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, want %d; output:\n%s\nwant %q in it", code, c.code, out, c.want)
			}
		})
	}
	kh, _ := os.ReadFile(filepath.Join(dir, fleet.KnownHostsFile))
	if string(kh) != "web2 ssh-ed25519 AAAAh2\n" {
		t.Fatalf("known_hosts after remove: %q", kh)
	}
	hs, err := fleet.LoadHosts(dir)
	if err != nil || len(hs.Hosts) != 1 || hs.Hosts[0].Name != "web2" {
		t.Fatalf("hosts after remove: %+v %v", hs, err)
	}
}
