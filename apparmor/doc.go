// Package apparmor holds one AppArmor profile per helper and for the
// frontend. It has no Go code: its tests compile every profile with the
// real apparmor_parser against Debian's packaged feature set, and hold
// each profile's rules to a per-helper allowlist.
package apparmor
