#!/usr/bin/env bash
# Install nginx (Debian's nginx-light: a small build that serves static
# files with ETags) for the functional tests of bundle polling, and print
# the absolute path of its binary as the last line of stdout.
#
# Everything else goes to stderr, so callers can do
#     nginx=$(tools/install-nginx.sh)
#
# An nginx already installed is reused; the tests run it as their own
# process with their own configuration, never the system's service.
#
# Exit codes: 0 success, 3 apt-get is not available (or we may not use
# it: not root), anything else: installation failure.

set -euo pipefail

log() {
    echo "install-nginx: $*" >&2
}

find_nginx() {
    local candidate
    for candidate in "$(command -v nginx || true)" /usr/sbin/nginx; do
        if [[ -n $candidate && -x $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# The functional tests' workers may run this and the other install script
# at once: one apt-get, and one policy-rc.d, at a time.
exec 9>"${TMPDIR:-/tmp}/oslo-opa-apt.lock"
if command -v flock >/dev/null; then
    flock 9
fi

if nginx=$(find_nginx); then
    log "reusing $("$nginx" -v 2>&1) at $nginx"
    echo "$nginx"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    log "ERROR: nginx is not installed and there is no apt-get to install it"
    log "(install nginx yourself, or point OSLO_OPA_NGINX at its binary)."
    exit 3
fi
sudo=()
if [[ $(id -u) != 0 ]]; then
    if ! sudo -n true 2>/dev/null; then
        log "ERROR: nginx is not installed and installing it needs root"
        log "(install nginx-light, or point OSLO_OPA_NGINX at its binary)."
        exit 3
    fi
    sudo=(sudo -n)
fi

start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
log "installing nginx-light with apt-get"
# policy-rc.d 101: do not start the system's nginx service on install
# (the tests run their own; a system one would take port 80 for nothing).
# Only when we place it, and removed after.
rcd=/usr/sbin/policy-rc.d
placed=
cleanup() {
    if [[ -n $placed ]]; then
        "${sudo[@]}" rm -f "$rcd"
    fi
}
trap cleanup EXIT
if [[ ! -e $rcd ]]; then
    placed=1
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$rcd" >/dev/null
    "${sudo[@]}" chmod 755 "$rcd"
fi
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends nginx-light >&2

if ! nginx=$(find_nginx); then
    log "ERROR: apt-get installed nginx-light but there is no nginx binary"
    exit 1
fi
log "installed $("$nginx" -v 2>&1) in $((SECONDS - start))s: $nginx"
echo "$nginx"
