package apparmor_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/msg"
)

const features = "/usr/share/apparmor-features/features"

// common is what every helper may do: map its own binary, read the build
// manifest and the account files (caller allowlists name groups), let the
// Go runtime size huge pages, and take signals.
func common(name string) map[string]string {
	return map[string]string{
		"/usr/libexec/sluice/sluice-" + name:                 "mr",
		"/usr/libexec/sluice/build-ids.json":                 "r",
		"/run/sluice/build-ids.json":                         "r",
		"/etc/group":                                         "r",
		"/etc/passwd":                                        "r",
		"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size": "r",
		"/run/systemd/journal/socket":                        "w",
	}
}

var commonOther = func(name string) []string {
	return []string{
		"signal (receive) peer=unconfined",
		"signal (send, receive) peer=sluice-" + name,
		"network unix stream",
		"network unix dgram",
	}
}

// allow is the allowlist: for each helper, every path it may name with
// the widest permissions it may have there, and the exact non-file rules.
// A profile may allow less; anything more fails.
var allow = map[string]struct {
	files map[string]string
	other []string
}{
	msg.Auth: {
		files: map[string]string{
			"/run/credentials/sluice-auth@*.service/":     "r",
			"/run/credentials/sluice-auth@*.service/*":    "r",
			"/var/lib/private/sluice-auth/":               "rw",
			"/var/lib/private/sluice-auth/**":             "rwk", // owner only, see ownerOnly
			"/run/sluice/auth.sock":                       "rw",
			"/var/lib/sluice-revocation/":                 "r",
			"/var/lib/sluice-revocation/revocations.json": "rw",
			"/var/lib/sluice-revocation/.revocations-*":   "rw",
		},
	},
	msg.Policy: {
		files: map[string]string{
			"/run/credentials/sluice-policy@*.service/":   "r",
			"/run/credentials/sluice-policy@*.service/*":  "r",
			"/etc/sluice/policy":                          "r",
			"/var/lib/sluice-revocation/revocations.json": "r",
			"/run/sluice/policy.sock":                     "rw",
			"/run/sluice/shell.sock":                      "rw",
			"/run/sluice/ptystore.sock":                   "rw",
			"/dev/ptmx":                                   "rw",
			"/dev/pts/ptmx":                               "rw",
		},
	},
	msg.Shell: {
		files: map[string]string{
			"/run/sluice/shell.sock":      "rw",
			"/run/sluice/record.sock":     "rw", // "shell to record"
			"/run/dbus/system_bus_socket": "rw",
			"/dev/ptmx":                   "rw",
			"/dev/pts/ptmx":               "rw",
		},
		other: []string{
			"dbus send bus=system path=/org/freedesktop/DBus interface=org.freedesktop.DBus member={Hello,AddMatch,RemoveMatch,GetNameOwner} peer=(name=org.freedesktop.DBus)",
			"dbus send bus=system path=/org/freedesktop/machine1 interface=org.freedesktop.machine1.Manager member=OpenMachineShell peer=(name=org.freedesktop.machine1)",
			"dbus receive bus=system peer=(name=org.freedesktop.machine1)",
			"dbus receive bus=system peer=(name=org.freedesktop.DBus)",
		},
	},
	msg.PtyStore: {
		files: map[string]string{
			"/run/credentials/sluice-ptystore.service/":   "r",
			"/run/credentials/sluice-ptystore.service/*":  "r",
			"/run/sluice/ptystore.sock":                   "rw",
			"/run/sluice/policy.sock":                     "rw",
			"/run/sluice/hangup.sock":                     "rw",
			"/run/systemd/notify":                         "w",
			"/var/lib/sluice-revocation/revocations.json": "r",
			"/etc/sluice/policy":                          "r",
			"/dev/ptmx":                                   "rw",
			"/dev/pts/ptmx":                               "rw",
		},
	},
	msg.Hangup: {
		files: map[string]string{
			"/run/sluice/hangup.sock": "rw",
			"/proc/":                  "r",
			"/proc/[0-9]*/stat":       "r",
			"/proc/[0-9]*/cgroup":     "r",
			"/proc/[0-9]*/mountinfo":  "r",
			"/run/systemd/sessions/*": "r",
			"/sys/fs/cgroup/**/user.slice/user-*.slice/session-*.scope/cgroup.procs": "r",
			"/sys/fs/cgroup/**/sluice-sessions/":                                     "r",
			"/sys/fs/cgroup/**/sluice-sessions/session-*/":                           "rw",
			"/sys/fs/cgroup/**/sluice-sessions/session-*/cgroup.kill":                "w",
			"/sys/fs/cgroup/**/sluice-sessions/session-*/cgroup.events":              "r",
		},
		other: []string{"capability kill", "signal (send) set=(hup, cont, kill)"},
	},
	msg.Record: {
		files: map[string]string{
			"/run/credentials/sluice-record@*.service/":   "r",
			"/run/credentials/sluice-record@*.service/*":  "r",
			"/var/lib/private/sluice-record/":             "rw",
			"/var/lib/private/sluice-record/**":           "rwk", // owner only, see ownerOnly
			"/var/lib/sluice-revocation/revocations.json": "r",
			"/run/sluice/record.sock":                     "rw",
			"/run/sluice/policy.sock":                     "rw",
			"/run/sluice/hangup.sock":                     "rw",
			// The shell's master, received (file_receive checks its
			// path); no slave: there is no outer pty any more.
			"/dev/ptmx":     "rw",
			"/dev/pts/ptmx": "rw",
		},
	},
	msg.Frontend: {
		files: map[string]string{
			"/run/sluice/auth.sock":                       "rw",
			"/run/sluice/policy.sock":                     "rw",
			"/run/sluice/ptystore.sock":                   "rw",
			"/run/sluice/record.sock":                     "rw", // auditors' rec-list and rec-open
			"/run/sluice/fleet.sock":                      "rw", // a fleet's gateway (--fleet)
			"/run/systemd/notify":                         "w",
			"/var/lib/sluice-revocation/revocations.json": "r",
			"/dev/ptmx":                                   "rw",
			"/dev/pts/ptmx":                               "rw",
		},
		other: []string{"network inet stream", "network inet6 stream"},
	},
}

// ownerOnly are patterns that must carry the owner qualifier.
var ownerOnly = map[string]bool{"/var/lib/private/sluice-auth/**": true, "/var/lib/private/sluice-record/**": true}

// check returns every way a profile exceeds the helper's allowlist.
func check(name string, p *audit.Profile) []string {
	var bad []string
	a, ok := allow[name]
	if !ok {
		return []string{"no allowlist for " + name}
	}
	if want := "sluice-" + name; p.Name != want {
		bad = append(bad, fmt.Sprintf("profile name %q, want %q", p.Name, want))
	}
	if want := "/usr/libexec/sluice/sluice-" + name; p.Attach != want {
		bad = append(bad, fmt.Sprintf("attaches to %q, want %q", p.Attach, want))
	}
	for _, inc := range p.Includes {
		if inc != "tunables/global" {
			bad = append(bad, fmt.Sprintf("includes %q: only tunables/global (variables, no rules) is allowed", inc))
		}
	}
	files := common(name)
	for k, v := range a.files {
		files[k] = v
	}
	other := map[string]bool{}
	for _, o := range append(commonOther(name), a.other...) {
		other[o] = true
	}
	for _, r := range p.Rules {
		if r.Kind != "file" {
			if !other[r.Text] {
				bad = append(bad, fmt.Sprintf("line %d: %q is not in %s's allowlist", r.Line, r.Text, name))
			}
			continue
		}
		max, ok := files[r.Path]
		if !ok {
			bad = append(bad, fmt.Sprintf("line %d: path %q is not in %s's allowlist", r.Line, r.Path, name))
			continue
		}
		for _, c := range r.Perms {
			if !strings.ContainsRune(max, c) {
				bad = append(bad, fmt.Sprintf("line %d: %q grants %q on %s, allowlist says at most %q", r.Line, r.Text, c, r.Path, max))
			}
		}
		if ownerOnly[r.Path] && !r.Owner {
			bad = append(bad, fmt.Sprintf("line %d: %s without owner", r.Line, r.Path))
		}
	}
	return bad
}

func profiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range audit.Helpers() {
		if _, err := os.Stat(h.Profile); err != nil {
			t.Fatalf("%s: no profile: %v", h.Component, err)
		}
		out[h.Component] = h.Profile
	}
	m, _ := filepath.Glob("usr.libexec.sluice.*")
	if len(m) != len(out)+len(fleetProfiles) {
		t.Fatalf("profiles %v, want exactly one per helper", m)
	}
	return out
}

// compile runs the real parser: -Q parses and compiles without loading
// into the kernel (the CI kernel has no AppArmor), -K skips the cache.
func compile(path string) (string, error) {
	out, err := exec.Command("apparmor_parser", "-Q", "-K", "--features-file", features, path).CombinedOutput()
	return string(out), err
}

func TestCompile(t *testing.T) {
	if _, err := exec.LookPath("apparmor_parser"); err != nil {
		t.Fatalf("apparmor_parser not installed (Debian package apparmor; scripts/deps.sh installs it): %v", err)
	}
	if _, err := os.Stat(features); err != nil {
		t.Fatalf("no packaged feature set: %v", err)
	}
	for name, path := range profiles(t) {
		if out, err := compile(path); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("%s: apparmor_parser: %v\n%s", name, err, out)
		}
	}

	// A broken copy must fail, so a pass above means something.
	src, err := os.ReadFile(profiles(t)[msg.Auth])
	if err != nil {
		t.Fatal(err)
	}
	for _, breakIt := range []struct{ what, from, to string }{
		{"missing comma", "/etc/group r,", "/etc/group r"},
		{"unknown permission", "/etc/group r,", "/etc/group q,"},
		{"missing brace", "\n}\n", "\n"},
	} {
		broken := strings.Replace(string(src), breakIt.from, breakIt.to, 1)
		if broken == string(src) {
			t.Fatalf("%s: nothing replaced", breakIt.what)
		}
		path := filepath.Join(t.TempDir(), "broken")
		if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := compile(path); err == nil {
			t.Errorf("%s: apparmor_parser accepted it:\n%s", breakIt.what, out)
		}
	}
}

func TestAllowlist(t *testing.T) {
	for name, path := range profiles(t) {
		p, err := audit.ParseProfileFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, b := range check(name, p) {
			t.Errorf("%s: %s", path, b)
		}
		t.Logf("%s: %s", p.Name, p.Summary())
	}
}

// TestAllowlistCatchesWidening widens a real profile in the ways a hurried
// edit would, and wants the check (or the parser) to refuse each.
func TestAllowlistCatchesWidening(t *testing.T) {
	src, err := os.ReadFile(profiles(t)[msg.Policy])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, rule string }{
		{"glob over /", "/** rw,"},
		{"glob over etc", "/etc/** r,"},
		{"sibling socket", "/run/sluice/auth.sock rw,"},
		{"more permissions", "/etc/sluice/policy rw,"},
		{"exec", "/usr/libexec/sluice/sluice-policy ix,"},
		{"capability", "capability sys_admin,"},
		{"all capabilities", "capability,"},
		{"bare network", "network,"},
		{"inet", "network inet stream,"},
		{"bare file", "file,"},
		{"ptrace", "ptrace (trace) peer=unconfined,"},
		{"mount", "mount,"},
		{"dbus for another helper", "dbus send bus=system,"},
		{"abstraction", "include <abstractions/base>"},
		{"deny carve-out", "deny /etc/shadow r,"},
		{"variable path", "@{HOME}/** r,"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			widened := strings.Replace(string(src), "\n}\n", "\n  "+tc.rule+"\n}\n", 1)
			p, err := audit.ParseProfile(widened)
			if err != nil {
				return // refused by the parser: fine
			}
			if bad := check(msg.Policy, p); len(bad) == 0 {
				t.Errorf("%q passed the allowlist", tc.rule)
			}
		})
	}
}
