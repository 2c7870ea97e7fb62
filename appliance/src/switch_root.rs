//! Leaving the initramfs. The kernel unpacks it into "rootfs", which can never be
//! unmounted, so `pivot_root` (which the sandbox jail needs) fails with EINVAL for every
//! process whose root is it. Stage 1 therefore moves the whole tree into a tmpfs,
//! freeing each file of the initramfs once copied, moves that tmpfs onto `/` and
//! re-executes init from it (what `switch_root` does).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use nix::mount::{mount, MsFlags};

/// The argument stage 1 passes to the re-executed init.
pub const SWITCHED: &str = "--switched-root";
const NEW_ROOT: &str = "/.newroot";

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SwitchError {
    let path = path.display().to_string();
    move |source| SwitchError::Io { what, path, source }
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> SwitchError {
    move |source| SwitchError::Sys { what, source }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn copy_owner_and_mode(src_meta: &fs::Metadata, dst: &Path) -> Result<(), SwitchError> {
    std::os::unix::fs::lchown(dst, Some(src_meta.uid()), Some(src_meta.gid()))
        .map_err(io("chown", dst))?;
    if !src_meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(src_meta.mode() & 0o7777))
            .map_err(io("chmod", dst))?;
    }
    Ok(())
}

/// Moves the tree under `src` into `dst` entry by entry: each file is copied, then
/// removed, so memory use stays at about one copy. `skip` (the new root) is left alone.
pub fn move_tree(src: &Path, dst: &Path, skip: &Path) -> Result<(), SwitchError> {
    let entries = fs::read_dir(src).map_err(io("read dir", src))?;
    for entry in entries {
        let entry = entry.map_err(io("read dir", src))?;
        let from = entry.path();
        if from == skip {
            continue;
        }
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io("stat", &from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(io("mkdir", &to))?;
            move_tree(&from, &to, skip)?;
            copy_owner_and_mode(&meta, &to)?;
            fs::remove_dir(&from).map_err(io("rmdir", &from))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io("readlink", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io("symlink", &to))?;
            copy_owner_and_mode(&meta, &to)?;
            fs::remove_file(&from).map_err(io("unlink", &from))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(io("copy", &from))?;
            copy_owner_and_mode(&meta, &to)?;
            fs::remove_file(&from).map_err(io("unlink", &from))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                libc::S_IFCHR
            } else if ft.is_block_device() {
                libc::S_IFBLK
            } else {
                libc::S_IFIFO
            };
            let c = cstr(&to);
            // SAFETY: mknod with a NUL-terminated path owned by `c` for the call.
            if unsafe { libc::mknod(c.as_ptr(), kind | (meta.mode() & 0o7777), meta.rdev()) } != 0 {
                return Err(io("mknod", &to)(std::io::Error::last_os_error()));
            }
            copy_owner_and_mode(&meta, &to)?;
            fs::remove_file(&from).map_err(io("unlink", &from))?;
        }
    }
    Ok(())
}

/// Stage 1: moves `/` into a tmpfs and execs `/sbin/init --switched-root` from it.
/// Returns only on failure.
pub fn switch_to_tmpfs() -> SwitchError {
    match try_switch() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn try_switch() -> Result<std::convert::Infallible, SwitchError> {
    let new_root = Path::new(NEW_ROOT);
    fs::create_dir_all(new_root).map_err(io("mkdir", new_root))?;
    mount(
        Some("root"),
        new_root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(sys("mount tmpfs for the new root"))?;
    move_tree(Path::new("/"), new_root, new_root)?;
    std::env::set_current_dir(new_root).map_err(io("chdir", new_root))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("move the new root onto /"))?;
    nix::unistd::chroot(".").map_err(sys("chroot"))?;
    std::env::set_current_dir("/").map_err(io("chdir", Path::new("/")))?;
    let init = c"/sbin/init";
    let arg = CString::new(SWITCHED).unwrap_or_default();
    let err = nix::unistd::execv(init, &[init, arg.as_c_str()]).map_err(sys("exec /sbin/init"));
    match err {
        Ok(never) => match never {},
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_files_links_and_dirs_and_frees_the_source() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir_all(s.join("usr/bin")).unwrap();
        fs::write(s.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(s.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("usr/bin", s.join("bin")).unwrap();
        fs::create_dir(s.join("skipme")).unwrap();
        move_tree(s, dst.path(), &s.join("skipme")).unwrap();
        let d = dst.path();
        assert_eq!(fs::read(d.join("usr/bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(d.join("usr/bin/tool")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read_link(d.join("bin")).unwrap(), Path::new("usr/bin"));
        assert!(!d.join("skipme").exists());
        let left: Vec<_> = fs::read_dir(s)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["skipme"]);
    }
}
