//! Stage 2's filesystems: the API filesystems, tmpfs for /run and /tmp, and the unified
//! cgroup hierarchy the sandbox jail uses.

use nix::mount::{mount, MsFlags};

use crate::console::log;

struct MountSpec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

fn specs() -> [MountSpec; 8] {
    let m = |source, target, fstype, flags, data| MountSpec {
        source,
        target,
        fstype,
        flags,
        data,
    };
    [
        m("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None),
        m("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None),
        m(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        m(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
        m(
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            NOSUID_NODEV,
            Some("mode=1777"),
        ),
        // Not nodev: sandbox run dirs live here.
        m(
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        m("tmpfs", "/tmp", "tmpfs", NOSUID_NODEV, Some("mode=1777")),
        m(
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            NOSUID_NODEV_NOEXEC,
            Some("nsdelegate"),
        ),
    ]
}

/// Mounts everything; a failure is logged and the rest still mounted.
pub fn mount_all() {
    for s in specs() {
        if let Err(e) = std::fs::create_dir_all(s.target) {
            log(format!("mkdir {}: {e}", s.target));
        }
        if let Err(e) = mount(Some(s.source), s.target, Some(s.fstype), s.flags, s.data) {
            log(format!("mount {} on {}: {e}", s.fstype, s.target));
        }
    }
}

/// Detaches the data disk at shutdown; read-only when something still holds it.
pub fn release_data(target: &str) {
    nix::unistd::sync();
    if let Err(e) = nix::mount::umount(target) {
        log(format!("umount {target}: {e}; remounting read-only"));
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, ro, None::<&str>) {
            log(format!("remount {target} read-only: {e}"));
        }
    }
    nix::unistd::sync();
}
