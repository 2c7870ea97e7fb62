#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build the images and run the tests:
# apt packages, the musl Rust target, vhost-device-vsock (QEMU TCG harness) and the
# Python test dependencies. Idempotent: skips what is already there.
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(
    linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev   # guest kernel
    busybox-static curl ca-certificates e2fsprogs debootstrap               # rootfs images
    qemu-system-x86 ovmf                                                     # TCG guest and appliance tests
    iproute2 util-linux                                                      # jail tests
    musl-tools                                                               # aws-lc (C) in the static vmm
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root or apt-get install them)"
    log "setup: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    log "setup: rustup target add x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
fi

TOOLS=$REPO_ROOT/target/tools
if [ ! -x "$TOOLS/bin/vhost-device-vsock" ]; then
    log "setup: cargo install vhost-device-vsock 0.3.0 (about a minute)"
    cargo install --quiet --locked vhost-device-vsock --version 0.3.0 --root "$TOOLS"
fi
