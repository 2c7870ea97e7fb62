//! Makes cached plaintext code reachable for jailed sandboxes.
//!
//! The code cache lives under the data dir, which stays 0700 (it holds the
//! registry with environment variables). Jails run as unprivileged host uids that
//! cannot traverse it, so each code revision is mirrored once into the sandbox run
//! dir - hard links where the filesystem allows, copies otherwise - and the worker is
//! given the mirror. Mirror names carry 128 random bits, but a jail's bind mounts show
//! them in its world-readable `/proc/<pid>/mountinfo`, so the name is no secret: the
//! mirror root is root-owned, mode 0710, group `worker::jail::JAIL_ROOT_GID`, the host
//! gid of every jail's root, which does the bind mounts. Other host users cannot
//! traverse it; inside the root, entries are world-readable for the jail's
//! unprivileged users.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("exposing code {path} to sandboxes: {source}")]
pub struct ExposeError {
    path: PathBuf,
    source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> ExposeError + '_ {
    move |source| ExposeError {
        path: path.to_path_buf(),
        source,
    }
}

/// Mirrors `src` (a code directory or image file) as `root/<name of src>.<random>`
/// and returns that path. `root` becomes 0710 with group `group` (the jails' root
/// gid), or 0700 with `None` (no jails: nobody else needs it). Idempotent; concurrent
/// callers race benignly via rename.
pub fn expose(src: &Path, root: &Path, group: Option<u32>) -> Result<PathBuf, ExposeError> {
    let name = src.file_name().ok_or_else(|| ExposeError {
        path: src.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    prepare_root(root, group)?;
    let prefix = format!("{}.", name.to_string_lossy());
    if let Some(found) = existing(root, &prefix) {
        return Ok(found);
    }
    let dest = root.join(format!("{prefix}{}", crate::ids::random_hex::<16>()));
    let tmp = root.join(format!(".tmp-{}", crate::ids::random_hex::<16>()));
    let made = mirror(src, &tmp).and_then(|()| std::fs::rename(&tmp, &dest).map_err(err(&dest)));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(dest)
}

/// Creates `root` private, then opens it to `group` only. Applied on every call, so a
/// root left by an older, laxer version is tightened too.
fn prepare_root(root: &Path, group: Option<u32>) -> Result<(), ExposeError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).map_err(err(parent))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(err(root)(e)),
        _ => {}
    }
    let mode = match group {
        Some(gid) => {
            std::os::unix::fs::chown(root, None, Some(gid)).map_err(err(root))?;
            0o710
        }
        None => 0o700,
    };
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).map_err(err(root))
}

/// The mirror made earlier for this source, if any (concurrent callers may each have
/// made one; any of them will do).
fn existing(root: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
}

fn mirror(src: &Path, dst: &Path) -> Result<(), ExposeError> {
    let meta = std::fs::symlink_metadata(src).map_err(err(src))?;
    if meta.is_symlink() {
        let target = std::fs::read_link(src).map_err(err(src))?;
        return std::os::unix::fs::symlink(target, dst).map_err(err(dst));
    }
    if meta.is_dir() {
        std::fs::create_dir(dst).map_err(err(dst))?;
        for entry in std::fs::read_dir(src).map_err(err(src))? {
            let entry = entry.map_err(err(src))?;
            mirror(&entry.path(), &dst.join(entry.file_name()))?;
        }
        return std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))
            .map_err(err(dst));
    }
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst).map_err(err(dst))?;
    }
    // Readable by the jail's unprivileged uids (the root above keeps out everyone
    // else); executables stay executable.
    let mode = if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).map_err(err(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_trees_and_files_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let src = d.path().join("private/abc");
        std::fs::create_dir_all(src.join("lib")).expect("mkdir");
        std::fs::write(src.join("bootstrap"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            src.join("bootstrap"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::write(src.join("lib/data.txt"), "x").expect("write");
        std::os::unix::fs::symlink("lib/data.txt", src.join("link")).expect("symlink");
        let root = d.path().join("exposed");
        let out = expose(&src, &root, None).expect("expose");
        let name = out
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("abc.") && name.len() == 4 + 32, "{name}");
        let root_mode = std::fs::metadata(&root).expect("meta").permissions().mode();
        assert_eq!(root_mode & 0o777, 0o700, "no jails, nobody else");
        let mode = std::fs::metadata(out.join("bootstrap"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_to_string(out.join("link")).expect("read"),
            "x"
        );
        assert_eq!(expose(&src, &root, None).expect("again"), out);
        let img = d.path().join("private/code.ext4");
        std::fs::write(&img, "img").expect("write");
        assert_eq!(
            std::fs::read(expose(&img, &root, None).expect("file")).expect("read"),
            b"img"
        );
    }

    #[test]
    fn the_root_is_open_to_the_jails_group_only() {
        use std::os::unix::fs::MetadataExt as _;
        let d = tempfile::tempdir().expect("tempdir");
        let src = d.path().join("private/abc");
        std::fs::create_dir_all(&src).expect("mkdir");
        let root = d.path().join("exposed");
        // A root left traversable by everyone (as older versions made it) is tightened.
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        // Root may hand the directory to any group; others only to their own.
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        // SAFETY: getegid has no preconditions.
        let own = unsafe { libc::getegid() };
        let group = if is_root {
            worker::jail::JAIL_ROOT_GID
        } else {
            own
        };
        expose(&src, &root, Some(group)).expect("expose");
        let meta = std::fs::metadata(&root).expect("meta");
        assert_eq!(
            meta.mode() & 0o7777,
            0o710,
            "group may traverse, others nothing"
        );
        assert_eq!(meta.gid(), group);
    }
}
