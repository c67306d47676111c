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

LOG_NAME=install-opa
# shellcheck source=tools/install-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/install-lib.sh"

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
else
    go_build "$OPA_MODULE" "$OPA_VERSION" "$bin_dir" opa is_wanted_opa \
        'point OSLO_OPA_BIN at an OPA binary'
fi
echo "$opa"
