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

LOG_NAME=install-nginx
# shellcheck source=tools/install-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/install-lib.sh"

# The functional tests' workers may run this and install-registry.sh at
# once.
apt_lock
if ! nginx=$(find_bin nginx /usr/sbin/nginx); then
    apt_install nginx-light 'point OSLO_OPA_NGINX at its binary'
    if ! nginx=$(find_bin nginx /usr/sbin/nginx); then
        log "ERROR: apt-get installed nginx-light but there is no nginx binary"
        exit 1
    fi
fi
log "using $("$nginx" -v 2>&1) at $nginx"
echo "$nginx"
