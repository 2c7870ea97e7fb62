#!/usr/bin/env bash
# Builds the guest kernel (vmlinux for our VMM, bzImage for QEMU) from Debian's
# linux-source-6.1: `make tinyconfig`, then kernel-config/microvm.config on top.
# Fails if any option the fragment asks for did not make it into the final .config.
source "$(dirname "$0")/lib.sh"

FRAGMENT=$REPO_ROOT/kernel-config/microvm.config
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
require_file "$SRC_TARBALL" linux-source-6.1
for t in make gcc flex bison bc; do require_tool "$t" "$t"; done
require_file /usr/include/libelf.h libelf-dev
require_file /usr/include/openssl/ssl.h libssl-dev

hash=$(inputs_hash "$FRAGMENT" "$REPO_ROOT/image-build/kernel.sh" "$REPO_ROOT/image-build/lib.sh" "linux-source $(deb_version linux-source-6.1)" "gcc $(gcc -dumpfullversion)")
if up_to_date kernel "$hash" "$IMAGES_DIR/vmlinux" "$IMAGES_DIR/bzImage"; then
    log "kernel: up to date (inputs $hash)"
    exit 0
fi

SRC=$WORK_DIR/linux-source-6.1
if [ ! -f "$SRC/Makefile" ]; then
    log "kernel: unpacking $SRC_TARBALL"
    rm -rf "$SRC"
    tar -C "$WORK_DIR" -xf "$SRC_TARBALL"
fi

log "kernel: configuring (tinyconfig + $(basename "$FRAGMENT"))"
make -C "$SRC" -s ARCH=x86_64 tinyconfig >/dev/null
"$SRC/scripts/kconfig/merge_config.sh" -m -O "$SRC" "$SRC/.config" "$FRAGMENT" >/dev/null
make -C "$SRC" -s ARCH=x86_64 olddefconfig >/dev/null

# merge_config.sh drops options whose dependencies are unmet without failing: check them all.
missing=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            grep -qxF -- "$line" "$SRC/.config" || { echo "kernel config: '$line' requested but final .config has: $(grep -E "^(# )?${line%%=*}[= ]" "$SRC/.config" || echo 'nothing')" >&2; missing=1; } ;;
        "# CONFIG_"*" is not set")
            opt=${line#\# }; opt=${opt%% *}
            if grep -qE "^$opt=" "$SRC/.config"; then echo "kernel config: '$opt' must be off but is on" >&2; missing=1; fi ;;
    esac
done <"$FRAGMENT"
[ "$missing" = 0 ] || die "kernel config: options above could not be set (unmet dependencies?)"

# Only a build from a clean tree says how long the kernel takes; an incremental one is not recorded.
fresh=0
[ -f "$SRC/vmlinux" ] || fresh=1
jobs=$(nproc)
log "kernel: building vmlinux and bzImage with $jobs jobs (a few minutes; progress every 200 objects)"
start=$(date +%s)
make -C "$SRC" ARCH=x86_64 -j"$jobs" vmlinux bzImage 2>&1 \
    | awk '/^  (CC|AS|LD|AR)/ { n++; if (n % 200 == 0) { printf "[image-build] kernel: %d objects built\n", n > "/dev/stderr" } next } { print }' \
    | grep -vE '^(  [A-Z]+ |make\[|Kernel: arch/x86/boot/bzImage is ready)' >&2 || true
[ -f "$SRC/vmlinux" ] && [ -f "$SRC/arch/x86/boot/bzImage" ] || die "kernel: build failed (see output above)"
cp "$SRC/vmlinux" "$IMAGES_DIR/vmlinux.tmp" && mv "$IMAGES_DIR/vmlinux.tmp" "$IMAGES_DIR/vmlinux"
cp "$SRC/arch/x86/boot/bzImage" "$IMAGES_DIR/bzImage.tmp" && mv "$IMAGES_DIR/bzImage.tmp" "$IMAGES_DIR/bzImage"
cp "$SRC/.config" "$IMAGES_DIR/kernel.config"
elapsed=$(( $(date +%s) - start ))
[ "$fresh" = 0 ] || echo "$elapsed" >"$IMAGES_DIR/.kernel.build-seconds"
mark_built kernel "$hash"
# The object tree (about 1.6 GB) is only worth keeping to iterate on the config.
[ "${LAMBDA_KEEP_KERNEL_TREE:-0}" = 1 ] || rm -rf "$SRC"
log "kernel: built in ${elapsed}s: vmlinux $(stat -c %s "$IMAGES_DIR/vmlinux") B, bzImage $(stat -c %s "$IMAGES_DIR/bzImage") B"
