package apparmor_test

import (
	"os"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/msg"
)

// The relay's allowlist: the helpers' own but the account files (it
// checks no caller: sshd and the relay account's key line are its gate),
// the host's policy and ptystore sockets, and the ptys it copies between.
func init() {
	allow[msg.Relay] = struct {
		files map[string]string
		other []string
	}{
		files: map[string]string{
			"/run/sluice/policy.sock":   "rw",
			"/run/sluice/ptystore.sock": "rw",
			"/dev/pts/[0-9]*":           "rw",
			"/dev/ptmx":                 "rw",
		},
	}
}

// TestRelayProfile compiles the relay's profile and holds it to its
// allowlist; a widened copy must fail: the relay account reaches the
// host's policy and ptystore and nothing else, whatever the gateway (or
// whoever holds its key) sends down the channel.
func TestRelayProfile(t *testing.T) {
	path := fleetProfiles[msg.Relay]
	if out, err := compile(path); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("apparmor_parser: %v\n%s", err, out)
	}
	p, err := audit.ParseProfileFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range check(msg.Relay, p) {
		t.Errorf("%s: %s", path, b)
	}
	t.Logf("%s: %s", p.Name, p.Summary())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for _, tc := range []struct{ name, from, to string }{
		{"auth's socket", "/run/sluice/policy.sock rw,", "/run/sluice/policy.sock rw,\n  /run/sluice/auth.sock rw,"},
		{"the shell helper's socket", "/run/sluice/policy.sock rw,", "/run/sluice/policy.sock rw,\n  /run/sluice/shell.sock rw,"},
		{"every socket", "/run/sluice/policy.sock rw,", "/run/sluice/* rw,"},
		{"a shell", "/dev/ptmx rw,", "/dev/ptmx rw,\n  /usr/bin/sh ix,"},
		{"tcp", "network unix stream,", "network inet stream,"},
		{"the revocation list", "/dev/ptmx rw,", "/dev/ptmx rw,\n  /var/lib/sluice-revocation/** rw,"},
		{"write the manifest", "/run/sluice/build-ids.json r,", "/run/sluice/build-ids.json rw,"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			widened := strings.Replace(src, tc.from, tc.to, 1)
			if widened == src {
				t.Fatal("nothing replaced")
			}
			p, err := audit.ParseProfile(widened)
			if err != nil {
				return
			}
			if bad := check(msg.Relay, p); len(bad) == 0 {
				t.Errorf("%q passed the allowlist", tc.to)
			}
		})
	}
}
