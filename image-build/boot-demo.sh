#!/usr/bin/env bash
# Builds the images (if needed) and boots the provided rootfs once, showing guest-init's
# banner. Uses our VMM where the host's KVM can run a guest's userspace, QEMU TCG otherwise
# (PVM-based KVM, as on the development machines, runs only the guest kernel).
source "$(dirname "$0")/lib.sh"
"$REPO_ROOT/image-build/build.sh"

VMM=$REPO_ROOT/target/release/vmm
if [ -e /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && [ -x "$VMM" ]; then
    log "booting under our VMM on KVM"
    exec "$VMM" --kernel "$IMAGES_DIR/vmlinux" --rootfs "$IMAGES_DIR/rootfs-provided.ext4" \
        --rootfs-read-only --vcpus 1 --mem-mib 128 --cmdline "console=ttyS0 reboot=k panic=1 quiet"
fi
require_tool qemu-system-x86_64 qemu-system-x86
log "booting under QEMU TCG ($( [ -d /sys/module/kvm_pvm ] && echo 'PVM KVM cannot run guest userspace' || echo 'no usable KVM or VMM not built'))"
start=$(date +%s%N)
qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=on,acpi=off -accel tcg -cpu max -m 128 -smp 1 \
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel "$IMAGES_DIR/bzImage" -append "console=ttyS0 root=/dev/vda ro reboot=t panic=-1 quiet" \
    -drive id=root,file="$IMAGES_DIR/rootfs-provided.ext4",format=raw,if=none,read-only=on \
    -device virtio-blk-device,drive=root </dev/null
log "guest powered off after $(( ($(date +%s%N) - start) / 1000000 )) ms"
