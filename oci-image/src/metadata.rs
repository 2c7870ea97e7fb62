//! Owner, mode and mtime from a layer's headers, set without following symlinks.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
    pub mtime: u64,
}

fn id(v: u64) -> io::Result<u32> {
    u32::try_from(v)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "uid or gid over 32 bits"))
}

/// Sets owner, then mode (chown clears set-id bits), then mtime. A symlink gets owner
/// and mtime only: its mode is not its own.
pub fn apply(path: &Path, owner: &Owner, is_symlink: bool) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(id(owner.uid)?), Some(id(owner.gid)?))?;
    if !is_symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(owner.mode & 0o7777))?;
    }
    set_mtime(path, owner.mtime)
}

/// Sets access and modification time to `secs`, on a symlink itself rather than its
/// target.
pub fn set_mtime(path: &Path, secs: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let secs = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `times` points
    // to the two timespecs utimensat reads; neither is retained by the kernel.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
