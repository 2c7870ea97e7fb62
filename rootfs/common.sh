# Shared steps for both rootfs variants. Sourced by rootfs/build.sh.

# lay_out_tree DIR: the Lambda filesystem layout and our /etc files.
lay_out_tree() {
    local root=$1
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib,usr/local/bin,etc,var/task,var/runtime,var/tmp,opt,tmp,proc,sys,dev,mnt,root,run,home/sbx_user1051}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 700 "$root/root"
    install -m 0644 "$ROOTFS_SRC/files/etc/passwd" "$ROOTFS_SRC/files/etc/group" \
        "$ROOTFS_SRC/files/etc/hosts" "$ROOTFS_SRC/files/etc/resolv.conf" "$ROOTFS_SRC/files/etc/os-release" "$root/etc/"
    chown 993:990 "$root/home/sbx_user1051"
}

# install_init DIR GUEST_INIT: our PID 1.
install_init() {
    install -m 0755 "$2" "$1/sbin/init"
}

# copy_with_libs DIR BINARY...: copies dynamically linked binaries and the shared
# libraries (and loader) they need, keeping the paths they have on the build host.
copy_with_libs() {
    local root=$1 bin lib
    shift
    for bin in "$@"; do
        install -D -m 0755 "$bin" "$root$bin"
        for lib in $(ldd "$bin" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }'); do
            [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
        done
    done
}

# make_ext4 DIR IMAGE LABEL: an ext4 image of DIR, sized to its content plus slack,
# built with mkfs.ext4 -d (no mounts, no loop devices).
make_ext4() {
    local dir=$1 image=$2 label=$3 kib
    kib=$(du -sk --apparent-size "$dir" | cut -f1)
    kib=$(( kib + kib / 4 + 16384 ))
    rm -f "$image.tmp"
    mkfs.ext4 -q -F -L "$label" -d "$dir" -E root_owner=0:0 -O ^has_journal -m 0 -N $(( $(find "$dir" | wc -l) + 4096 )) "$image.tmp" "${kib}K"
    mv "$image.tmp" "$image"
}
