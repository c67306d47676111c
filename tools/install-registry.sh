#!/usr/bin/env bash
# Install an OCI registry (Debian's docker-registry, the CNCF distribution
# registry) and build oras (an OCI client, to push bundles into it) for the
# functional test of OPA pulling bundles from a registry.
#
# Prints the absolute paths of the two binaries as the last two lines of
# stdout, oras's then the registry's (the last line), e.g.
#     /root/.cache/oslo-opa/oras-v1.3.6/bin/oras
#     /usr/bin/docker-registry
# so callers can do  registry=$(tools/install-registry.sh | tail -n 1).
# Everything else goes to stderr.
#
# A docker-registry already installed is reused; the tests run it as their
# own process with their own configuration, never the system's service,
# which is not started on install.  oras is cached in
#     ${OSLO_OPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oslo-opa}/oras-v<ver>/bin
# like tools/install-opa.sh's OPA.
#
# Exit codes: 0 success, 3 apt-get is not available (or we may not use it:
# not root) or Go is not installed, anything else: installation failure.

set -euo pipefail

ORAS_VERSION=1.3.6
ORAS_MODULE=oras.land/oras/cmd/oras

LOG_NAME=install-registry
# shellcheck source=tools/install-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/install-lib.sh"

# --- oras, built from source into the cache -------------------------------

oras_dir=$cache_root/oras-v$ORAS_VERSION/bin
oras=$oras_dir/oras

is_wanted_oras() {
    local out
    [[ -x $1 ]] || return 1
    out=$("$1" version 2>/dev/null) || return 1
    grep -Eq "^Version:[[:space:]]+$ORAS_VERSION\$" <<<"$out"
}

if is_wanted_oras "$oras"; then
    log "reusing oras $ORAS_VERSION at $oras"
else
    go_build "$ORAS_MODULE" "$ORAS_VERSION" "$oras_dir" oras is_wanted_oras \
        'point OSLO_OPA_ORAS at an oras binary'
fi

# --- docker-registry, from Debian -----------------------------------------

# The functional tests' workers may run this and install-nginx.sh at once.
apt_lock
if ! registry=$(find_bin docker-registry /usr/bin/docker-registry); then
    apt_install docker-registry 'point OSLO_OPA_REGISTRY at its binary'
    if ! registry=$(find_bin docker-registry /usr/bin/docker-registry); then
        log "ERROR: apt-get installed docker-registry but there is no binary"
        exit 1
    fi
fi
log "using docker-registry at $registry"

echo "$oras"
echo "$registry"
