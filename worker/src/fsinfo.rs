//! What the kernel says about the file system holding a path (`statvfs`, `statfs`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// `statvfs(2)` of `path`.
pub fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = cpath(path)?;
    // SAFETY: statvfs only writes the struct it is given (zeroed is a valid bit
    // pattern for it); `c` is NUL-terminated and outlives the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

/// (total, available to unprivileged users) bytes of the file system holding `path`.
pub fn space(path: &Path) -> std::io::Result<(u64, u64)> {
    let st = statvfs(path)?;
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// Whether `path` is on a tmpfs or ramfs (an appliance's initramfs root): in memory.
pub fn in_memory(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(c) = cpath(path) else {
        return false;
    };
    // SAFETY: statfs only writes the struct it is given (zeroed is a valid bit
    // pattern for it); `c` is NUL-terminated and outlives the call.
    let fs_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return false;
        }
        st.f_type
    };
    matches!(fs_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
}
