//! Paths inside an image root. A layer's entry names are made relative and refused
//! when they climb out (`..`); the directories on the way to an entry are resolved
//! the way the image's own processes will see them, with symlinks followed inside
//! the root (an absolute target starts again at the root, `..` stops at it), so no
//! entry, whiteout or hard link reaches a file outside the root.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path, as Linux's own limit.
const MAX_LINK_HOPS: u32 = 40;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("tar entry {0:?} climbs out of the image root")]
    Escapes(PathBuf),
    #[error("more than {MAX_LINK_HOPS} symlinks on the way to {0:?}")]
    TooManyLinks(PathBuf),
    #[error("resolving {path:?}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An entry name relative to the root: leading `/` and `.` dropped, `..` refused.
/// `None` for the root itself.
pub fn entry_path(raw: &Path) -> Result<Option<PathBuf>, PathError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(PathError::Escapes(raw.to_path_buf()))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Where `rel` (from [`entry_path`]) is on the host: every symlink before the last
/// component is followed inside `root`; the last one too when `follow_last`.
pub fn resolve_in_root(root: &Path, rel: &Path, follow_last: bool) -> Result<PathBuf, PathError> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = components_reversed(rel);
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        if name == "." {
            continue;
        }
        let candidate = join(root, &resolved).join(&name);
        let is_last = pending.is_empty();
        let link = match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                Some(fs::read_link(&candidate).map_err(|source| PathError::Io {
                    path: candidate.clone(),
                    source,
                })?)
            }
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(PathError::Io {
                    path: candidate,
                    source,
                })
            }
        };
        let Some(target) = link else {
            resolved.push(name);
            continue;
        };
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return Err(PathError::TooManyLinks(rel.to_path_buf()));
        }
        if target.is_absolute() {
            resolved.clear();
        }
        pending.extend(components_reversed(&target));
    }
    Ok(join(root, &resolved))
}

/// The path's components, last first (a stack to pop from); `..` and `.` kept.
fn components_reversed(p: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir => Some(OsString::from(".")),
            Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    v.reverse();
    v
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_made_relative_and_parent_components_refused() {
        let ok = |s: &str| entry_path(Path::new(s)).unwrap();
        assert_eq!(ok("./usr/bin/x"), Some(PathBuf::from("usr/bin/x")));
        assert_eq!(ok("/etc/passwd"), Some(PathBuf::from("etc/passwd")));
        assert_eq!(ok("./"), None);
        for bad in ["../x", "a/../../x", "a/.."] {
            assert!(
                matches!(entry_path(Path::new(bad)), Err(PathError::Escapes(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root_whatever_they_point_at() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("/", root.join("top")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str, last| resolve_in_root(root, Path::new(p), last).unwrap();
        assert_eq!(r("lib/x.so", false), root.join("usr/lib/x.so"));
        assert_eq!(r("top/etc/passwd", false), root.join("etc/passwd"));
        assert_eq!(r("usr/up/etc/passwd", false), root.join("etc/passwd"));
        // The last component is the entry itself: replaced, not followed.
        assert_eq!(r("lib", false), root.join("lib"));
        assert_eq!(r("lib", true), root.join("usr/lib"));
        let err = resolve_in_root(root, Path::new("loop/x"), false).unwrap_err();
        assert!(matches!(err, PathError::TooManyLinks(_)), "{err}");
    }
}
