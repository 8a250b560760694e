#!/usr/bin/env bash
# Installs what building and testing sluice needs on a Debian machine that
# has Go: the Debian packages for the real tools the tests drive. Idempotent;
# fast when everything is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have chromium         || need+=(chromium)
have dbus-daemon      || need+=(dbus)
have apparmor_parser  || need+=(apparmor)
have systemd-nspawn   || need+=(systemd-container)
have systemd-analyze  || need+=(systemd)
have node             || need+=(nodejs)
have npm              || need+=(npm)
have ip               || need+=(iproute2)
have unshare          || need+=(util-linux)
have useradd          || need+=(passwd)
# The fleet (docs/fleet.md) is carried by OpenSSH: ssh on the gateway,
# sshd on every host; tests/fleet runs both.
have ssh              || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# sluice-login (helpers/shell/login) is built with cgo against libpam; the login
# tests drive tmux and who, and need the host's login PAM stack.
have gcc              || need+=(gcc libc6-dev)
have tmux             || need+=(tmux)
# Recordings (helpers/record) are checked with `asciinema cat` in the tests.
have asciinema        || need+=(asciinema)
have who              || need+=(coreutils)
[ -e /usr/include/security/pam_appl.h ] || need+=(libpam0g-dev)
[ -e /etc/pam.d/login ] || need+=(login)
[ -e /usr/share/apparmor-features/features ] || need+=(apparmor)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
# de-duplicate
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
sudo=""
if [ "$(id -u)" != 0 ]; then
	if have sudo; then sudo="sudo"; else
		echo "deps: need root (or sudo) to install: ${need[*]}" >&2
		exit 1
	fi
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
