# Shared helpers for the image build scripts. Sourced, not executed.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES_DIR=${LAMBDA_IMAGES_DIR:-$REPO_ROOT/target/images}
WORK_DIR=${LAMBDA_IMAGES_WORK:-$REPO_ROOT/target/image-work}
mkdir -p "$IMAGES_DIR" "$WORK_DIR"

log() { printf '[image-build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'image-build: error: %s\n' "$*" >&2; exit 1; }

# require_tool TOOL PACKAGE: fail with the Debian package to install when TOOL is missing.
require_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] && return 0
    die "'$1' not found: install the Debian package '$2' (apt-get install $2), or run image-build/setup-host.sh"
}

# require_file PATH PACKAGE
require_file() {
    [ -e "$1" ] || die "'$1' not found: install the Debian package '$2' (apt-get install $2), or run image-build/setup-host.sh"
}

# inputs_hash FILE_OR_STRING...: sha256 over files (content and name) and literal strings.
inputs_hash() {
    local item
    for item in "$@"; do
        if [ -f "$item" ]; then
            printf 'file %s\n' "${item#"$REPO_ROOT"/}"
            sha256sum <"$item"
        elif [ -d "$item" ]; then
            printf 'dir %s\n' "${item#"$REPO_ROOT"/}"
            (cd "$item" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum;
             find . -print0 | LC_ALL=C sort -z | xargs -0 -r stat -c '%n %a')
        else
            printf 'str %s\n' "$item"
        fi
    done | sha256sum | cut -d' ' -f1
}

# up_to_date NAME HASH OUTPUT...: true when every output exists and NAME was built from HASH.
up_to_date() {
    local name=$1 hash=$2 out
    shift 2
    [ -f "$IMAGES_DIR/.$name.inputs" ] || return 1
    [ "$(cat "$IMAGES_DIR/.$name.inputs")" = "$hash" ] || return 1
    for out in "$@"; do [ -e "$out" ] || return 1; done
}

# mark_built NAME HASH
mark_built() { printf '%s\n' "$2" >"$IMAGES_DIR/.$1.inputs"; }

# deb_version PACKAGE: installed version of a Debian package, or "none".
deb_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }
