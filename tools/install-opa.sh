#!/usr/bin/env bash
# Build (once) the OPA release that the functional tests run against, and
# print the absolute path of its binary as the last line of stdout.
#
# Everything else goes to stderr, so callers can do
#     opa=$(tools/install-opa.sh)
#
# The binary is cached in
#     ${OSLO_OPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oslo-opa}/opa-v<ver>/bin
# and reused while it reports the expected version.
#
# Exit codes: 0 success, 3 Go is not installed, anything else: build failure.

set -euo pipefail

OPA_VERSION=1.22.3
OPA_MODULE=github.com/open-policy-agent/opa

log() {
    echo "install-opa: $*" >&2
}

cache_root=${OSLO_OPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oslo-opa}
if [[ $cache_root != /* ]]; then
    cache_root=$PWD/$cache_root
fi
bin_dir=$cache_root/opa-v$OPA_VERSION/bin
opa=$bin_dir/opa

is_wanted_opa() {
    local out
    [[ -x $1 ]] || return 1
    out=$("$1" version 2>/dev/null) || return 1
    grep -qx "Version: $OPA_VERSION" <<<"$out"
}

if is_wanted_opa "$opa"; then
    log "reusing OPA $OPA_VERSION at $opa"
    echo "$opa"
    exit 0
fi

go=$(command -v go || true)
if [[ -z $go && -x /usr/local/go/bin/go ]]; then
    go=/usr/local/go/bin/go
fi
if [[ -z $go ]]; then
    log "ERROR: Go is not installed (no 'go' on PATH nor /usr/local/go/bin/go)."
    log "OPA $OPA_VERSION is built from source with 'go install'; install Go"
    log "(https://go.dev/doc/install) or point OSLO_OPA_BIN at an OPA binary."
    exit 3
fi

mkdir -p "$bin_dir"
# Build into a private directory and rename into place, so an interrupted
# or concurrent build never leaves a half-written binary at $opa.
tmp_bin=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$tmp_bin"' EXIT

log "building OPA $OPA_VERSION with $("$go" version) (takes a few minutes)"
start=$SECONDS
if ! GOBIN=$tmp_bin CGO_ENABLED=0 "$go" install -trimpath \
        "$OPA_MODULE@v$OPA_VERSION" >&2; then
    log "ERROR: 'go install $OPA_MODULE@v$OPA_VERSION' failed"
    exit 1
fi
if ! is_wanted_opa "$tmp_bin/opa"; then
    log "ERROR: the built binary does not report Version: $OPA_VERSION"
    exit 1
fi
mv -f "$tmp_bin/opa" "$opa"
log "built OPA $OPA_VERSION in $((SECONDS - start))s: $opa"
echo "$opa"
