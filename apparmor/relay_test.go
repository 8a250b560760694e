package apparmor_test

import "sluice/msg"

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

// relayWidenings must each fail the relay's allowlist: the relay account
// reaches the host's policy and ptystore and nothing else, whatever the
// gateway (or whoever holds its key) sends down the channel.
var relayWidenings = []widening{
	{"auth's socket", "/run/sluice/policy.sock rw,", "/run/sluice/policy.sock rw,\n  /run/sluice/auth.sock rw,"},
	{"the shell helper's socket", "/run/sluice/policy.sock rw,", "/run/sluice/policy.sock rw,\n  /run/sluice/shell.sock rw,"},
	{"every socket", "/run/sluice/policy.sock rw,", "/run/sluice/* rw,"},
	{"a shell", "/dev/ptmx rw,", "/dev/ptmx rw,\n  /usr/bin/sh ix,"},
	{"tcp", "network unix stream,", "network inet stream,"},
	{"the revocation list", "/dev/ptmx rw,", "/dev/ptmx rw,\n  /var/lib/sluice-revocation/** rw,"},
	{"write the manifest", "/run/sluice/build-ids.json r,", "/run/sluice/build-ids.json rw,"},
}
