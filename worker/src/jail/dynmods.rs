//! Task migration without an RCU grace period.
//!
//! Moving a task into a cgroup (every jail's start writes its pid to `cgroup.procs`)
//! takes the kernel's global `cgroup_threadgroup_rwsem` for writing. By default that
//! waits for an RCU grace period unless one passed just before: measured here, a jail's
//! spawn took 4 ms or 16–27 ms, about every other cold start. The cgroup2 mount option
//! `favordynmods` (Linux 6.0+) keeps the lock in the mode where writers do not wait, for
//! every hierarchy on the host (v1 too: the lock is global); forks and exits pay an
//! atomic operation instead of a per-CPU one in exchange. The worker turns it on at
//! start unless told to keep the mount options (`--keep-cgroup-mount-options`).

use super::cgroup::{parse_mountinfo, CgroupMount};
use std::ffi::CString;
use std::path::PathBuf;

/// What [`favor_dynamic_modifications`] found or did.
#[derive(Debug)]
pub enum Dynmods {
    /// A cgroup2 mount already has the option.
    Already(PathBuf),
    Enabled(PathBuf),
    /// No cgroup2 mount to set it on (a v1-only host).
    NoCgroup2,
    /// The remount failed (an older kernel, or no CAP_SYS_ADMIN).
    Failed(PathBuf, std::io::Error),
}

impl std::fmt::Display for Dynmods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Already(p) => write!(f, "cgroup: {} has favordynmods", p.display()),
            Self::Enabled(p) => write!(
                f,
                "cgroup: remounted {} with favordynmods (sandbox starts skip an RCU grace period)",
                p.display()
            ),
            Self::NoCgroup2 => write!(f, "cgroup: no cgroup2 mount for favordynmods"),
            Self::Failed(p, e) => write!(
                f,
                "cgroup: favordynmods on {}: {e}; sandbox starts may wait for RCU grace periods",
                p.display()
            ),
        }
    }
}

/// Turns on `favordynmods` on the first cgroup2 mount if no cgroup2 mount has it,
/// keeping every other option of the mount and its file system.
pub fn favor_dynamic_modifications() -> Dynmods {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v2: Vec<CgroupMount> = parse_mountinfo(&mountinfo)
        .into_iter()
        .filter(|m| m.v2)
        .collect();
    if let Some(m) = v2.iter().find(|m| has_option(m)) {
        return Dynmods::Already(m.mount_point.clone());
    }
    let Some(m) = v2.into_iter().next() else {
        return Dynmods::NoCgroup2;
    };
    let (flags, data) = remount_args(&m);
    match remount(&m.mount_point, flags, &data) {
        Ok(()) => Dynmods::Enabled(m.mount_point),
        Err(e) => Dynmods::Failed(m.mount_point, e),
    }
}

fn has_option(m: &CgroupMount) -> bool {
    m.super_opts.iter().any(|o| o == "favordynmods")
}

/// A remount resets what it does not name: the mount's flags come from its own
/// options, the file system's options (`nsdelegate`, ...) are given again.
fn remount_args(m: &CgroupMount) -> (libc::c_ulong, String) {
    let mut flags = libc::MS_REMOUNT;
    for o in &m.mount_opts {
        flags |= match o.as_str() {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            _ => 0,
        };
    }
    let mut data: Vec<&str> = m
        .super_opts
        .iter()
        .map(String::as_str)
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect();
    data.push("favordynmods");
    (flags, data.join(","))
}

fn remount(target: &std::path::Path, flags: libc::c_ulong, data: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let target = CString::new(target.as_os_str().as_bytes()).map_err(invalid)?;
    let data = CString::new(data).map_err(invalid)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call (or null
    // for the source and type, which a remount ignores); the kernel copies them.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remount_keeps_the_mount_flags_and_file_system_options() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 \
                  cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let m = parse_mountinfo(mi).pop().expect("mount");
        assert!(!has_option(&m));
        let (flags, data) = remount_args(&m);
        let want = libc::MS_REMOUNT
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_RELATIME;
        assert_eq!(flags, want);
        assert_eq!(data, "nsdelegate,memory_recursiveprot,favordynmods");
    }

    #[test]
    fn an_existing_option_is_seen() {
        let mi = "35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 \
                  rw,favordynmods\n";
        let m = parse_mountinfo(mi).pop().expect("mount");
        assert!(has_option(&m));
    }
}
