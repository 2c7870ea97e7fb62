#!/usr/bin/env bash
# Builds one rootfs variant as an unpacked tree and an ext4 image.
#   rootfs/build.sh provided|python3.11 GUEST_INIT OUT_DIR
# provided   : Lambda provided.al2023-like: busybox shell and utilities, curl (with the
#              glibc it links against), our guest-init as /sbin/init.
# python3.11 : a Debian minbase userland with Python 3.11 and awslambdaric in
#              /var/runtime, plus /var/runtime/bootstrap, like Lambda's python3.11 runtime.
set -euo pipefail
ROOTFS_SRC=$(cd "$(dirname "$0")" && pwd)
source "$ROOTFS_SRC/common.sh"

variant=${1:?variant: provided or python3.11}
guest_init=${2:?path to the static guest-init binary}
out_dir=${3:?output directory}
tree=$out_dir/rootfs-$variant
image=$out_dir/rootfs-$variant.ext4
staging=$tree.staging
AWSLAMBDARIC_VERSION=4.2.2

rm -rf "$staging"
mkdir -p "$staging"

case "$variant" in
provided)
    lay_out_tree "$staging"
    install -m 0755 /bin/busybox "$staging/bin/busybox"
    # One link per applet at the path busybox itself reports (bin/sh, usr/bin/env, ...).
    busybox --list-full | while read -r applet; do
        [ "$applet" = bin/busybox ] || [ -e "$staging/$applet" ] || ln -s /bin/busybox "$staging/$applet"
    done
    copy_with_libs "$staging" /usr/bin/curl
    # Rust (gnu target) and C++ functions need the unwinder and C++ runtime like on Lambda.
    for lib in /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libstdc++.so.6; do
        [ -e "$lib" ] && install -D -m 0755 "$(readlink -f "$lib")" "$staging$lib"
    done
    mkdir -p "$staging/etc/ssl/certs"
    [ -f /etc/ssl/certs/ca-certificates.crt ] && install -m 0644 /etc/ssl/certs/ca-certificates.crt "$staging/etc/ssl/certs/"
    ;;
python3.11)
    # The Debian userland changes only with these inputs, and debootstrap takes minutes:
    # it is cached outside the image, keyed by them.
    base=${ROOTFS_CACHE:-$out_dir/.cache}/python3.11-base
    base_key="bookworm minbase python3-minimal,python3,ca-certificates awslambdaric==$AWSLAMBDARIC_VERSION"
    if [ "$(cat "$base.key" 2>/dev/null)" != "$base_key" ] || [ ! -d "$base" ]; then
        rm -rf "$base" "$base.tmp"
        mkdir -p "$(dirname "$base")"
        echo "rootfs: debootstrap bookworm minbase + python3 (a few minutes)" >&2
        debootstrap --variant=minbase --include=python3-minimal,python3,ca-certificates \
            bookworm "$base.tmp" http://deb.debian.org/debian >"$base.log" 2>&1 \
            || { tail -20 "$base.log" >&2; echo "rootfs: debootstrap failed (log: $base.log)" >&2; exit 1; }
        rm -rf "$base.tmp"/var/cache/apt/archives/*.deb "$base.tmp"/var/lib/apt/lists/* \
            "$base.tmp"/usr/share/doc/* "$base.tmp"/usr/share/man/* "$base.tmp"/usr/share/locale/* "$base.tmp"/usr/share/info/*
        python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check \
            --target "$base.tmp/var/runtime" --only-binary=:all: \
            --python-version 3.11 --platform manylinux2014_x86_64 --implementation cp \
            "awslambdaric==$AWSLAMBDARIC_VERSION"
        mv "$base.tmp" "$base"
        echo "$base_key" >"$base.key"
    fi
    cp -a "$base/." "$staging/"
    # debootstrap's /sbin/init is a dangling systemd link or absent; ours replaces it.
    rm -f "$staging/sbin/init"
    lay_out_tree "$staging"
    install -m 0755 "$ROOTFS_SRC/files/var/runtime/bootstrap" "$staging/var/runtime/bootstrap"
    ;;
*)
    echo "rootfs: unknown variant '$variant' (expected provided or python3.11)" >&2
    exit 2
    ;;
esac

install_init "$staging" "$guest_init"
make_ext4 "$staging" "$image" "rootfs"
rm -rf "$tree"
mv "$staging" "$tree"
