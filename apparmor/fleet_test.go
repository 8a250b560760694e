package apparmor_test

import (
	"os"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/msg"
)

// fleetProfiles are the fleet's (docs/fleet.md), apart from the helpers
// audit.Helpers lists: a gateway's fleet helper, and a host's relay
// (sshd's forced command for the relay account, relay_test.go).
var fleetProfiles = map[string]string{msg.Fleet: "usr.libexec.sluice.sluice-fleet", msg.Relay: "usr.libexec.sluice.sluice-relay"}

// The fleet helper's allowlist: the helpers' own plus what ssh, which
// runs under the helper's profile, reads and connects to.
func init() {
	allow[msg.Fleet] = struct {
		files map[string]string
		other []string
	}{
		files: map[string]string{
			"/run/sluice/fleet.sock":                     "rw",
			"/var/lib/private/sluice-fleet/":             "rw",
			"/var/lib/private/sluice-fleet/**":           "rwk",
			"/etc/nsswitch.conf":                         "r",
			"/run/systemd/userdb/":                       "r",
			"/run/systemd/userdb/io.systemd.DynamicUser": "rw",
			"/run/systemd/userdb/io.systemd.Multiplexer": "rw",
			"/usr/bin/ssh":                               "ix",
			"/usr/bin/ssh-keygen":                        "ix",
			"/etc/ld.so.cache":                           "r",
			"/{usr/,}lib{,32,64}/**":                     "mr",
			"/etc/ssl/openssl.cnf":                       "r",
			"/etc/hosts":                                 "r",
			"/etc/host.conf":                             "r",
			"/etc/resolv.conf":                           "r",
			"/etc/gai.conf":                              "r",
			"/dev/null":                                  "rw",
			"/dev/urandom":                               "r",
			"/dev/tty":                                   "rw",
			"/dev/ptmx":                                  "rw",
			"/dev/pts/ptmx":                              "rw",
			"/dev/pts/[0-9]*":                            "rw",
		},
		other: []string{"network inet stream", "network inet6 stream", "network netlink raw"},
	}
	ownerOnly["/var/lib/private/sluice-fleet/**"] = true
	ownerOnly["/var/lib/private/sluice-fleet/"] = true
}

// fleetWidenings must each fail the fleet helper's allowlist: the key's
// directory only as its owner, no other helper's socket, no shell or
// other program.
var fleetWidenings = []widening{
	{"the key not as owner", "owner /var/lib/private/sluice-fleet/** rwk,", "/var/lib/private/sluice-fleet/** rwk,"},
	{"another helper's socket", "/run/sluice/fleet.sock rw,", "/run/sluice/fleet.sock rw,\n  /run/sluice/ptystore.sock rw,"},
	{"a shell", "/usr/bin/ssh ix,", "/usr/bin/ssh ix,\n  /usr/bin/sh ix,"},
	{"ssh unconfined", "/usr/bin/ssh ix,", "/usr/bin/ssh ux,"},
	{"udp", "network inet stream,", "network inet dgram,"},
	{"the user's ssh config", "/etc/hosts r,", "/etc/hosts r,\n  /etc/ssh/** r,"},
}

// widening is one line of a profile made wider (from replaced by to).
type widening struct{ name, from, to string }

// TestFleetProfiles compiles each of the fleet's profiles and holds it to
// its allowlist; every widened copy of it must fail.
func TestFleetProfiles(t *testing.T) {
	for _, h := range []struct {
		helper    string
		widenings []widening
	}{
		{msg.Fleet, fleetWidenings},
		{msg.Relay, relayWidenings},
	} {
		t.Run(h.helper, func(t *testing.T) {
			path := fleetProfiles[h.helper]
			if out, err := compile(path); err != nil || strings.TrimSpace(out) != "" {
				t.Fatalf("apparmor_parser: %v\n%s", err, out)
			}
			p, err := audit.ParseProfileFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range check(h.helper, p) {
				t.Errorf("%s: %s", path, b)
			}
			t.Logf("%s: %s", p.Name, p.Summary())
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			src := string(b)
			for _, w := range h.widenings {
				t.Run(w.name, func(t *testing.T) {
					widened := strings.Replace(src, w.from, w.to, 1)
					if widened == src {
						t.Fatal("nothing replaced")
					}
					p, err := audit.ParseProfile(widened)
					if err != nil {
						return
					}
					if bad := check(h.helper, p); len(bad) == 0 {
						t.Errorf("%q passed the allowlist", w.to)
					}
				})
			}
		})
	}
}
