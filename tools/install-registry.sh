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

log() {
    echo "install-registry: $*" >&2
}

# --- oras, built from source into the cache -------------------------------

cache_root=${OSLO_OPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oslo-opa}
if [[ $cache_root != /* ]]; then
    cache_root=$PWD/$cache_root
fi
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
    go=$(command -v go || true)
    if [[ -z $go && -x /usr/local/go/bin/go ]]; then
        go=/usr/local/go/bin/go
    fi
    if [[ -z $go ]]; then
        log "ERROR: Go is not installed (no 'go' on PATH nor"
        log "/usr/local/go/bin/go): oras $ORAS_VERSION is built with 'go install'."
        exit 3
    fi
    mkdir -p "$oras_dir"
    # Built aside and renamed into place: never a half-written binary.
    tmp_bin=$(mktemp -d "$oras_dir/.build.XXXXXX")
    trap 'rm -rf "$tmp_bin"' EXIT
    log "building oras $ORAS_VERSION with $("$go" version)"
    start=$SECONDS
    if ! GOBIN=$tmp_bin CGO_ENABLED=0 "$go" install -trimpath \
            "$ORAS_MODULE@v$ORAS_VERSION" >&2; then
        log "ERROR: 'go install $ORAS_MODULE@v$ORAS_VERSION' failed"
        exit 1
    fi
    if ! is_wanted_oras "$tmp_bin/oras"; then
        log "ERROR: the built oras does not report Version: $ORAS_VERSION"
        exit 1
    fi
    mv -f "$tmp_bin/oras" "$oras"
    log "built oras $ORAS_VERSION in $((SECONDS - start))s: $oras"
fi

# --- docker-registry, from Debian -----------------------------------------

find_registry() {
    local candidate
    for candidate in "$(command -v docker-registry || true)" \
            /usr/bin/docker-registry; do
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

if registry=$(find_registry); then
    log "reusing docker-registry at $registry"
else
    if ! command -v apt-get >/dev/null; then
        log "ERROR: docker-registry is not installed and there is no apt-get"
        log "(install it yourself, or point OSLO_OPA_REGISTRY at its binary)."
        exit 3
    fi
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        if ! sudo -n true 2>/dev/null; then
            log "ERROR: docker-registry is not installed and installing it"
            log "needs root (or point OSLO_OPA_REGISTRY at its binary)."
            exit 3
        fi
        sudo=(sudo -n)
    fi
    start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d 101: the package's service is not started on install
    # (the test runs its own registry; a system one would hold port 5000).
    # Only when we place it, and removed after.
    rcd=/usr/sbin/policy-rc.d
    placed=
    cleanup() {
        if [[ -n $placed ]]; then
            "${sudo[@]}" rm -f "$rcd"
        fi
        if [[ -n ${tmp_bin:-} ]]; then
            rm -rf "$tmp_bin"
        fi
    }
    trap cleanup EXIT
    if [[ ! -e $rcd ]]; then
        placed=1
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$rcd" >/dev/null
        "${sudo[@]}" chmod 755 "$rcd"
    fi
    log "installing docker-registry with apt-get"
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        docker-registry >&2
    if ! registry=$(find_registry); then
        log "ERROR: apt-get installed docker-registry but there is no binary"
        exit 1
    fi
    log "installed docker-registry in $((SECONDS - start))s: $registry"
fi

echo "$oras"
echo "$registry"
