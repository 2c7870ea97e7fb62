#!/usr/bin/env bash
# Builds the appliance host image into target/appliance/ (see docs/appliance.md):
#   appliance-vmlinuz          Debian's kernel (KVM for Intel and AMD, NVMe, ENA, virtio)
#   appliance-initramfs.cpio.zst  the whole root: appliance-init, busybox, e2fsprogs,
#                              the supervisor, the vmm, the guest kernel and rootfs images
#   appliance.efi              both as one UEFI executable (systemd-stub)
#   appliance-disk.img         raw GPT disk: EFI system partition + empty lambda-data
#   manifest.json              file, size, sha256, inputs hash, kernel package
# Skipped when the hash of its inputs is unchanged. Needs the guest images
# (image-build/build.sh) first.
#   image-build/appliance.sh [--no-setup] [--no-disk]
source "$(dirname "$0")/lib.sh"

OUT=$REPO_ROOT/target/appliance
WORK=$WORK_DIR/appliance
SRC=$REPO_ROOT/image-build/appliance
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
# Fixed timestamps and ids: the same inputs give the same bytes.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
CMDLINE=${APPLIANCE_CMDLINE:-console=tty0 console=ttyS0,115200 quiet}

setup=1
disk=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-setup) setup=0 ;;
        --no-disk) disk=0 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

APT_PACKAGES=(kmod cpio zstd systemd-boot-efi binutils fdisk dosfstools mtools busybox-static e2fsprogs ca-certificates)
if [ "$setup" = 1 ]; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root or apt-get install them)"
        log "appliance: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi
for t in depmod cpio zstd objcopy sfdisk mkfs.vfat mcopy; do require_tool "$t" "one of: ${APT_PACKAGES[*]}"; done
# The static vmm links aws-lc (chunk decryption), which builds with musl's C compiler.
require_tool x86_64-linux-musl-gcc musl-tools
require_file "$STUB" systemd-boot-efi
for f in vmlinux rootfs-provided.ext4 rootfs-python3.11.ext4 manifest.json rootfs-provided/sbin/init; do
    [ -f "$IMAGES_DIR/$f" ] || die "$IMAGES_DIR/$f missing: run image-build/build.sh first"
done

# The kernel: the package Debian's linux-image-amd64 points at, unsigned flavour
# (APPLIANCE_KERNEL_PACKAGE pins another).
kpkg=${APPLIANCE_KERNEL_PACKAGE:-$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ { print $2 "-unsigned"; exit }')}
[ -n "$kpkg" ] || die "cannot find Debian's kernel package (apt-get update?)"
kver=$(apt-cache show "$kpkg" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
[ -n "$kver" ] || die "package $kpkg not found (apt-get update?)"

log "appliance: building supervisor, vmm (static) and appliance-init (static)"
(cd "$REPO_ROOT" && cargo build --quiet --release -p supervisor --bin supervisor \
    && cargo build --quiet --release --target x86_64-unknown-linux-musl -p vmm --bin vmm -p appliance --bin appliance-init)
SUPERVISOR=$REPO_ROOT/target/release/supervisor
VMM=$REPO_ROOT/target/x86_64-unknown-linux-musl/release/vmm
INIT=$REPO_ROOT/target/x86_64-unknown-linux-musl/release/appliance-init
for b in "$VMM" "$INIT"; do
    file "$b" 2>/dev/null | grep -q 'statically linked\|static-pie' || [ ! -x /usr/bin/file ] || die "$b is not static"
done

hash=$(inputs_hash "kernel $kpkg $kver" "$0" "$SRC" "$REPO_ROOT/image-build/lib.sh" "$SUPERVISOR" "$VMM" "$INIT" \
    "$IMAGES_DIR/manifest.json" "busybox $(deb_version busybox-static)" "e2fsprogs $(deb_version e2fsprogs)" "ca-certificates $(deb_version ca-certificates)" \
    "stub $(deb_version systemd-boot-efi)" "dosfstools $(deb_version dosfstools)" "mtools $(deb_version mtools)" \
    "cmdline $CMDLINE" "disk $disk" "epoch $SOURCE_DATE_EPOCH")
if [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$hash" ] && [ -f "$OUT/manifest.json" ]; then
    log "appliance: up to date (inputs $hash)"
    exit 0
fi
rm -rf "$OUT"
mkdir -p "$OUT" "$WORK"

# --- kernel package (cached by name and version)
kdir=$WORK/kernel-$kpkg-$kver
if [ ! -d "$kdir/root" ]; then
    log "appliance: fetching $kpkg $kver"
    rm -rf "$kdir.tmp"
    mkdir -p "$kdir.tmp"
    (cd "$kdir.tmp" && apt-get download -q "$kpkg=$kver" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    deb=$(ls "$kdir.tmp"/*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || die "apt-get download $kpkg=$kver failed"
    dpkg -x "$deb" "$kdir.tmp/root"
    rm -f "$deb"
    mv "$kdir.tmp" "$kdir"
fi
release=$(ls "$kdir/root/lib/modules")
[ -n "$release" ] && [ -f "$kdir/root/boot/vmlinuz-$release" ] || die "unexpected layout in $kpkg"
[ -f "$kdir/root/lib/modules/$release/modules.dep" ] || depmod -b "$kdir/root" "$release"

# --- the root tree
root=$WORK/root
rm -rf "$root"
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,usr/share,etc,proc,sys,dev,run,tmp,data,root,var}
for l in bin sbin lib lib64; do ln -s "usr/$l" "$root/$l"; done
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
ln -s ../run "$root/var/run"
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

install -m 0755 "$INIT" "$root/usr/sbin/init"
# The kernel runs /init of an initramfs.
ln -s usr/sbin/init "$root/init"
# ... and it is the kernel's module loader helper (/sbin/modprobe).
ln -s init "$root/usr/sbin/modprobe"
install -m 0755 "$VMM" "$root/usr/bin/vmm"
install -m 0755 /bin/busybox "$root/usr/bin/busybox"
busybox --list-full | while read -r applet; do
    name=${applet##*/}
    [ -e "$root/usr/bin/$name" ] || [ -e "$root/usr/sbin/$name" ] || ln -s busybox "$root/usr/bin/$name"
done
source "$REPO_ROOT/rootfs/common.sh"
# mke2fs and debugfs build container images' ext4 file systems.
copy_with_libs "$root" "$SUPERVISOR" /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/debugfs
mv "$root$SUPERVISOR" "$root/usr/bin/supervisor"
rm -rf "$root${SUPERVISOR%/target/release/supervisor}"
ln -sf mke2fs "$root/usr/sbin/mkfs.ext4"
[ -f /etc/mke2fs.conf ] && install -m 0644 /etc/mke2fs.conf "$root/etc/mke2fs.conf"
install -D -m 0755 "$SRC/udhcpc.script" "$root/usr/share/appliance/udhcpc.script"
# Debian's CA bundle: registries reached over HTTPS (container images) are checked with it.
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

images=$root/usr/share/lambda-microvm/images
mkdir -p "$images"
for f in vmlinux rootfs-provided.ext4 rootfs-python3.11.ext4 guest-init manifest.json; do
    cp --sparse=always "$IMAGES_DIR/$f" "$images/$f"
done
# The provided runtime's tree too (25 MB): process isolation where KVM cannot run guests.
cp -a "$IMAGES_DIR/rootfs-provided" "$images/rootfs-provided"

mods=$root/lib/modules/$release
mkdir -p "$mods"
python3 "$SRC/select_modules.py" "$SRC/modules.list" "$kdir/root/lib/modules/$release" "$mods"
depmod -b "$root" "$release"

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
ln -s ../run/resolv.conf "$root/etc/resolv.conf"
ln -s ../proc/self/mounts "$root/etc/mtab"
appliance_version=$(awk -F'"' '/^version/ { print $2; exit }' "$REPO_ROOT/Cargo.toml")
cat >"$root/etc/os-release" <<OSREL
NAME="lambda-microvm appliance"
ID=lambda-microvm
VERSION_ID=$appliance_version
PRETTY_NAME="lambda-microvm appliance $appliance_version (kernel $release)"
OSREL

# --- initramfs: newc, sorted, fixed times and owners
log "appliance: packing the initramfs"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) \
    | zstd -q -T0 -9 -o "$OUT/appliance-initramfs.cpio.zst"
install -m 0644 "$kdir/root/boot/vmlinuz-$release" "$OUT/appliance-vmlinuz"

# --- UEFI executable: systemd-stub with kernel, initramfs, command line and os-release
log "appliance: appliance.efi"
printf '%s' "$CMDLINE" >"$WORK/cmdline.txt"
align() { echo $(( ($1 + 4095) / 4096 * 4096 )); }
last=0
while read -r size vma; do
    end=$(( 16#$vma + 16#$size ))
    [ "$end" -gt "$last" ] && last=$end
done < <(objdump -h "$STUB" | awk '$1 ~ /^[0-9]+$/ { print $3, $4 }')
osrel=$(align "$last")
cmdl=$(align $(( osrel + $(stat -c %s "$root/etc/os-release") )))
linux=$(align $(( cmdl + $(stat -c %s "$WORK/cmdline.txt") )))
initrd=$(align $(( linux + $(stat -c %s "$OUT/appliance-vmlinuz") )))
objcopy \
    --add-section .osrel="$root/etc/os-release" --change-section-vma .osrel="$(printf 0x%x "$osrel")" \
    --add-section .cmdline="$WORK/cmdline.txt" --change-section-vma .cmdline="$(printf 0x%x "$cmdl")" \
    --add-section .linux="$OUT/appliance-vmlinuz" --change-section-vma .linux="$(printf 0x%x "$linux")" \
    --add-section .initrd="$OUT/appliance-initramfs.cpio.zst" --change-section-vma .initrd="$(printf 0x%x "$initrd")" \
    "$STUB" "$OUT/appliance.efi"

# --- raw GPT disk: ESP with the UEFI executable as the removable-media boot path, and an
# empty partition named lambda-data that appliance-init formats on first boot.
if [ "$disk" = 1 ]; then
    log "appliance: appliance-disk.img"
    efi_mib=$(( $(stat -c %s "$OUT/appliance.efi") / 1048576 * 11 / 10 + 64 ))
    data_mib=${APPLIANCE_DATA_MIB:-2048}
    esp=$WORK/esp.img
    rm -f "$esp"
    mkfs.vfat -C -F 32 -n LAMBDA-EFI -i 4c414d42 --invariant "$esp" $(( efi_mib * 1024 )) >/dev/null
    MTOOLS_SKIP_CHECK=1 mmd -i "$esp" ::/EFI ::/EFI/BOOT
    MTOOLS_SKIP_CHECK=1 mcopy -m -i "$esp" "$OUT/appliance.efi" ::/EFI/BOOT/BOOTX64.EFI
    img=$OUT/appliance-disk.img
    truncate -s $(( (1 + efi_mib + data_mib + 1) * 1048576 )) "$img"
    sfdisk --quiet "$img" <<PARTS
label: gpt
label-id: 6C616D62-6461-2D6D-6963-726F766D0001
first-lba: 2048
start=2048, size=$(( efi_mib * 2048 )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6C616D62-6461-2D6D-6963-726F766D0002, name="EFI"
size=$(( data_mib * 2048 )), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6C616D62-6461-2D6D-6963-726F766D0003, name="lambda-data"
PARTS
    dd if="$esp" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
    rm -f "$esp"
fi

python3 - "$OUT" "$hash" "$kpkg" "$kver" "$release" "$CMDLINE" <<'PY'
import hashlib, json, os, sys
out, inputs, kpkg, kver, release, cmdline = sys.argv[1:7]
entries = []
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name)
    if name.startswith(".") or name == "manifest.json" or not os.path.isfile(path):
        continue
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    entries.append({"file": name, "size": os.path.getsize(path), "sha256": h.hexdigest()})
manifest = {"images": entries, "inputs": inputs, "kernel_package": f"{kpkg} {kver}",
            "kernel_release": release, "efi_cmdline": cmdline}
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
for e in entries:
    print(f"  {e['file']:<32} {e['size']:>12} B  sha256 {e['sha256'][:16]}")
PY
printf '%s\n' "$hash" >"$OUT/.inputs"
log "appliance: ready in $OUT (kernel $release)"
