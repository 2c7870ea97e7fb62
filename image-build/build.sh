#!/usr/bin/env bash
# The one entry point for the guest images: installs what the machine lacks, then builds
# the kernel, guest-init and both rootfs variants into target/images/ with a manifest.
# Each step is skipped when the hash of its inputs is unchanged.
#   image-build/build.sh [--no-setup] [--only kernel|guest-init|provided|python3.11]
source "$(dirname "$0")/lib.sh"

setup=1
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-setup) setup=0 ;;
        --only) only=${2:?--only needs a step name}; shift ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

[ "$setup" = 0 ] || "$REPO_ROOT/image-build/setup-host.sh"

want kernel && "$REPO_ROOT/image-build/kernel.sh"

GUEST_INIT=$IMAGES_DIR/guest-init
if want guest-init || want provided || want python3.11; then
    log "guest-init: cargo build --release --target x86_64-unknown-linux-musl"
    (cd "$REPO_ROOT" && cargo build --quiet --release -p guest-init --target x86_64-unknown-linux-musl)
    built=$REPO_ROOT/target/x86_64-unknown-linux-musl/release/guest-init
    file "$built" 2>/dev/null | grep -q 'statically linked\|static-pie' || [ ! -x /usr/bin/file ] \
        || die "guest-init is not statically linked"
    cmp -s "$built" "$GUEST_INIT" || install -m 0755 "$built" "$GUEST_INIT"
fi

build_rootfs() {
    local variant=$1 hash
    require_tool mkfs.ext4 e2fsprogs
    case "$variant" in
        provided) require_file /bin/busybox busybox-static; require_tool curl curl ;;
        python3.11) require_tool debootstrap debootstrap ;;
    esac
    hash=$(inputs_hash "variant $variant" "$REPO_ROOT/rootfs" "$GUEST_INIT" "$REPO_ROOT/image-build/lib.sh" \
        "busybox $(deb_version busybox-static)" "curl $(deb_version curl)" "e2fsprogs $(deb_version e2fsprogs)")
    if up_to_date "rootfs-$variant" "$hash" "$IMAGES_DIR/rootfs-$variant.ext4" "$IMAGES_DIR/rootfs-$variant"; then
        log "rootfs $variant: up to date (inputs $hash)"
        return 0
    fi
    log "rootfs $variant: building"
    ROOTFS_CACHE=$WORK_DIR "$REPO_ROOT/rootfs/build.sh" "$variant" "$GUEST_INIT" "$IMAGES_DIR"
    mark_built "rootfs-$variant" "$hash"
    log "rootfs $variant: $(stat -c %s "$IMAGES_DIR/rootfs-$variant.ext4") B"
}
want provided && build_rootfs provided
want python3.11 && build_rootfs python3.11

# Manifest: what each image is, how big, its digest and the inputs it was built from.
python3 - "$IMAGES_DIR" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
entries = []
for name, key in [("vmlinux", "kernel"), ("bzImage", "kernel"), ("guest-init", None),
                  ("rootfs-provided.ext4", "rootfs-provided"), ("rootfs-python3.11.ext4", "rootfs-python3.11")]:
    path = os.path.join(d, name)
    if not os.path.exists(path):
        continue
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    inputs = None
    if key and os.path.exists(os.path.join(d, f".{key}.inputs")):
        inputs = open(os.path.join(d, f".{key}.inputs")).read().strip()
    entries.append({"file": name, "size": os.path.getsize(path), "sha256": h.hexdigest(), "inputs": inputs})
secs = os.path.join(d, ".kernel.build-seconds")
manifest = {"images": entries,
            "kernel_build_seconds": int(open(secs).read()) if os.path.exists(secs) else None}
tmp = os.path.join(d, "manifest.json.tmp")
with open(tmp, "w") as f:
    json.dump(manifest, f, indent=2)
os.replace(tmp, os.path.join(d, "manifest.json"))
for e in entries:
    print(f"  {e['file']:<26} {e['size']:>12} B  sha256 {e['sha256'][:16]}")
PY
log "images ready in $IMAGES_DIR"
