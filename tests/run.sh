#!/usr/bin/env bash
# Runs the whole test suite, as CI does: installs what a fresh Debian 12 machine lacks,
# builds the guest images and the appliance, then formatting, lints, Rust tests, Python
# tests against the real binaries (the appliance's under nested KVM in QEMU TCG), and
# bounded fuzzing runs.
#   tests/run.sh [--quick]   (--quick: no fuzzing)
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO_ROOT"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

# Each step also prints the free space left: a full disk is the one failure a CI log
# cannot otherwise explain.
step() {
    printf '\n=== %s (%(%H:%M:%S)T; %s free in target/)\n' "$*" -1 \
        "$(df -h --output=avail "$REPO_ROOT" 2>/dev/null | tail -1 | tr -d ' ')"
}
# A CI checkout builds once: incremental state would only double the disk the build takes.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
SECONDS=0

step "host packages (tcpdump, a registry, skopeo and htpasswd for the tests; etcd; protoc for the etcd client crate, libclang for SQLite's session extension)"
missing=()
for pkg in tcpdump iproute2 docker-registry skopeo apache2-utils e2fsprogs etcd-server \
           protobuf-compiler libprotobuf-dev libclang-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "images (kernel, guest-init, rootfs variants)"
image-build/build.sh

step "python test environment"
PYENV=$REPO_ROOT/target/pyenv
[ -x "$PYENV/bin/python" ] || python3 -m venv "$PYENV"
"$PYENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Tests must not run cargo themselves (cargo holds the build directory lock while tests
# run), so everything they execute is built here first.
step "build binaries the tests execute"
cargo build --workspace --bins --quiet
cargo build --release --quiet --target x86_64-unknown-linux-musl -p fn-rust -p integration-tests --bins

step "appliance image (Debian kernel, initramfs, UEFI executable, GPT disk image)"
image-build/appliance.sh

step "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee target/cargo-test.log
grep -q '^test result:' target/cargo-test.log || { echo "cargo test ran no test" >&2; exit 1; }

step "pytest"
PATH=$PYENV/bin:$PATH "$PYENV/bin/python" -m pytest -q tests/python

if [ "$quick" = 0 ]; then
    step "fuzzing (bounded)"
    tests/fuzz.sh --seconds "${FUZZ_SECONDS:-30}" --jobs 2 --report target/bench/fuzz-ci.json
fi

step "all tests passed in ${SECONDS}s"
