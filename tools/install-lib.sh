# Sourced by tools/install-*.sh: what the three install scripts share.
# The script sets LOG_NAME first; messages go to stderr, so that stdout
# holds only the paths the script prints.
#
#   find_bin NAME...             the first of NAME (on PATH) or paths that
#                                is executable, else status 1
#   go_build MODULE VERSION DIR NAME CHECK HINT
#                                go install MODULE@vVERSION as DIR/NAME,
#                                built aside and renamed into place; CHECK
#                                is a function telling the wanted binary
#                                (given its path); exit 3 without Go
#   apt_lock                     one apt-get (and policy-rc.d) at a time,
#                                across the install scripts
#   apt_install PACKAGE HINT     apt-get install PACKAGE without starting
#                                its service; exit 3 without apt-get or root

log() {
    echo "$LOG_NAME: $*" >&2
}

cache_root=${OSLO_OPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oslo-opa}
if [[ $cache_root != /* ]]; then
    cache_root=$PWD/$cache_root
fi

# Commands run on exit, whatever the path out.
_at_exit=()
_run_at_exit() {
    local cmd
    for cmd in "${_at_exit[@]}"; do
        eval "$cmd"
    done
}
trap _run_at_exit EXIT

find_bin() {
    local candidate
    for candidate in "$@"; do
        if [[ $candidate != /* ]]; then
            candidate=$(command -v "$candidate" || true)
        fi
        if [[ -n $candidate && -x $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

go_build() {
    local module=$1 version=$2 dir=$3 name=$4 check=$5 hint=$6 go tmp
    go=$(find_bin go /usr/local/go/bin/go) || {
        log "ERROR: Go is not installed (no 'go' on PATH nor"
        log "/usr/local/go/bin/go): $name $version is built with 'go install';"
        log "install Go (https://go.dev/doc/install) or $hint."
        exit 3
    }
    mkdir -p "$dir"
    # Built aside and renamed into place: an interrupted or concurrent
    # build never leaves a half-written binary.
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    _at_exit+=("rm -rf '$tmp'")
    log "building $name $version with $("$go" version)"
    local start=$SECONDS
    if ! GOBIN=$tmp CGO_ENABLED=0 "$go" install -trimpath \
            "$module@v$version" >&2; then
        log "ERROR: 'go install $module@v$version' failed"
        exit 1
    fi
    if ! "$check" "$tmp/$name"; then
        log "ERROR: the built $name does not report version $version"
        exit 1
    fi
    mv -f "$tmp/$name" "$dir/$name"
    log "built $name $version in $((SECONDS - start))s: $dir/$name"
}

apt_lock() {
    exec 9>"${TMPDIR:-/tmp}/oslo-opa-apt.lock"
    if command -v flock >/dev/null; then
        flock 9
    fi
}

apt_install() {
    local package=$1 hint=$2 sudo=()
    if ! command -v apt-get >/dev/null; then
        log "ERROR: $package is not installed and there is no apt-get"
        log "(install it yourself, or $hint)."
        exit 3
    fi
    if [[ $(id -u) != 0 ]]; then
        if ! sudo -n true 2>/dev/null; then
            log "ERROR: $package is not installed and installing it needs"
            log "root (install it yourself, or $hint)."
            exit 3
        fi
        sudo=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d 101: the package's service is not started on install
    # (the tests run their own, on their own ports). Only when we place
    # it, and removed after.
    local rcd=/usr/sbin/policy-rc.d
    if [[ ! -e $rcd ]]; then
        _at_exit+=("${sudo[*]} rm -f $rcd")
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$rcd" >/dev/null
        "${sudo[@]}" chmod 755 "$rcd"
    fi
    log "installing $package with apt-get"
    local start=$SECONDS
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "$package" >&2
    log "installed $package in $((SECONDS - start))s"
}
