// Package systemd holds sluice's unit files, sysusers.d and tmpfiles.d
// entries. It has no Go code: its tests check the files with the real
// systemd-analyze (verify, and security --offline=true for the exposure
// score) and check that socket permissions and each helper's own caller
// allowlist agree.
package systemd
