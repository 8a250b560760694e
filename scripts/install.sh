#!/usr/bin/env bash
# Installs a built sluice into DESTDIR under PREFIX, the layout an admin
# (or a package) gets:
#   PREFIX/libexec/sluice/   helpers, the runner (if built), build-ids.json
#   PREFIX/bin/sluicectl     the admin CLI (a link into libexec/sluice)
#   PREFIX/lib/systemd/system, PREFIX/lib/sysusers.d, PREFIX/lib/tmpfiles.d
#   /etc/apparmor.d/         one profile per helper
#   PREFIX/share/polkit-1/rules.d/50-sluice.rules
#   /etc/sluice/policy       default policy (kept if one exists)
#   PREFIX/share/doc/sluice/ operations guide
# Usage: scripts/install.sh DESTDIR PREFIX [BINDIR]   (BINDIR default: bin)
# The units and profiles name /usr/libexec/sluice; another PREFIX is
# substituted into them. Nothing is enabled or started: see
# docs/operations.md for that.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $0 DESTDIR PREFIX [BINDIR]" >&2
	exit 2
fi
destdir=${1%/}
prefix=${2%/}
src=$(cd "$(dirname "$0")/.." && pwd)
bindir=${3:-$src/bin}
[ -n "$prefix" ] || { echo "install: PREFIX must not be empty" >&2; exit 2; }
case $prefix in /*) ;; *) echo "install: PREFIX must be absolute" >&2; exit 2 ;; esac

helpers=(sluice-auth sluice-policy sluice-shell sluice-ptystore sluice-hangup sluice-record sluice-frontend)
missing=()
for b in "${helpers[@]}" sluicectl; do
	[ -x "$bindir/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install: not built in $bindir: ${missing[*]} (run make build)" >&2
	exit 1
fi

libexec=$destdir$prefix/libexec/sluice
unitdir=$destdir$prefix/lib/systemd/system
# Rewrites the one path the shipped files hard-code.
subst() { sed "s|/usr/libexec/sluice|$prefix/libexec/sluice|g" "$1"; }
put() { # mode src dest: install a file, rewritten for PREFIX
	install -d -m 0755 "$(dirname "$3")"
	subst "$2" >"$3.tmp"
	chmod "$1" "$3.tmp"
	mv -f "$3.tmp" "$3"
}

install -d -m 0755 "$libexec" "$destdir$prefix/bin"
for b in "${helpers[@]}"; do
	install -m 0755 "$bindir/$b" "$libexec/$b"
done
# The embedded runner, for machines without systemd; not used by the units.
if [ -x "$bindir/sluice" ]; then
	install -m 0755 "$bindir/sluice" "$libexec/sluice"
fi
# The embedded shell backend's login (PAM, utmp); found beside sluice-shell.
if [ -x "$bindir/sluice-login" ]; then
	install -m 0755 "$bindir/sluice-login" "$libexec/sluice-login"
fi
# The fleet's two binaries (docs/fleet.md): inert unless a gateway enables
# sluice-fleet.socket or a host's sshd names sluice-relay as a forced
# command.
for b in sluice-fleet sluice-relay; do
	if [ -x "$bindir/$b" ]; then
		install -m 0755 "$bindir/$b" "$libexec/$b"
	fi
done
# sluicectl lives beside the helpers, so the manifest (which the helpers
# need to accept its admin calls) covers it and it finds the manifest.
install -m 0755 "$bindir/sluicectl" "$libexec/sluicectl"
ln -sfn "../libexec/sluice/sluicectl" "$destdir$prefix/bin/sluicectl"
# The manifest records the installed files' identities, so each helper
# can take its precomputed build ID instead of hashing itself per call.
# A package must re-run this after unpacking (new inodes):
#   sluicectl manifest --write PREFIX/libexec/sluice
"$libexec/sluicectl" manifest --write "$libexec"

for f in "$src"/systemd/*.socket "$src"/systemd/*.service "$src"/systemd/*.target; do
	put 0644 "$f" "$unitdir/$(basename "$f")"
done
put 0644 "$src/systemd/sluice.sysusers" "$destdir$prefix/lib/sysusers.d/sluice.conf"
put 0644 "$src/systemd/sluice.tmpfiles" "$destdir$prefix/lib/tmpfiles.d/sluice.conf"

for f in "$src"/apparmor/usr.libexec.sluice.*; do
	name=$(basename "$f")
	[ "$prefix" = /usr ] || name=${name/usr.libexec.sluice/${prefix#/}.libexec.sluice}
	put 0644 "$f" "$destdir/etc/apparmor.d/${name//\//.}"
done

put 0644 "$src/polkit/50-sluice.rules" "$destdir$prefix/share/polkit-1/rules.d/50-sluice.rules"

install -d -m 0755 "$destdir/etc/sluice"
if [ -e "$destdir/etc/sluice/policy" ]; then
	put 0644 "$src/config/policy.default" "$destdir/etc/sluice/policy.default"
else
	put 0644 "$src/config/policy.default" "$destdir/etc/sluice/policy"
fi

install -d -m 0755 "$destdir$prefix/share/doc/sluice"
install -m 0644 "$src/docs/operations.md" "$destdir$prefix/share/doc/sluice/operations.md"
install -m 0644 "$src/docs/recording.md" "$destdir$prefix/share/doc/sluice/recording.md"
