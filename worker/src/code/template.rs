//! One unpacked tree per package digest, shared by that digest's sandboxes: each
//! sandbox's own directory is a tree of hard links into it, so scaling a function out
//! decompresses and writes its package once, not once per sandbox.
//!
//! A template lives exactly as long as some sandbox directory made from it (each holds
//! an `Arc`); the last one to go removes it. Plaintext therefore exists only while a
//! sandbox of that code does, under the same closed root as the sandboxes' directories.
//! The files are the root's and read-only for the jails (bound read-only at
//! `/var/task`), so no sandbox can change what another one runs.

use super::unpack::{io, CodeDir};
use super::CodeError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// An unpacked package; its directory goes with the last sandbox directory made from it.
pub struct Template(pub(super) CodeDir);

/// Per digest: the live template (or mounted image), behind a lock held while one is
/// being made, so a burst of cold starts of one new function unpacks it once.
pub(super) type Slot<T = Template> = Arc<tokio::sync::Mutex<Weak<T>>>;

pub(super) struct Templates<T = Template> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for Templates<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
        }
    }
}

impl<T> Templates<T> {
    /// The slot of `digest_hex`. Slots with no live template and nobody using them are
    /// forgotten here, so the map holds only digests with sandboxes.
    pub(super) fn slot(&self, digest_hex: &str) -> Slot<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, s| {
            Arc::strong_count(s) > 1 || s.try_lock().map_or(true, |t| t.strong_count() > 0)
        });
        slots.entry(digest_hex.to_owned()).or_default().clone()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }
}

/// Recreates the tree `src` at `dest` (which must not exist): directories made anew,
/// files hard-linked, symbolic links copied. Blocking.
pub(super) fn link_tree(src: &Path, dest: &Path) -> Result<(), CodeError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let mode = std::fs::metadata(src)
        .map_err(io(src))?
        .permissions()
        .mode();
    std::fs::DirBuilder::new()
        .mode(mode & 0o7777)
        .create(dest)
        .map_err(io(dest))?;
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let kind = entry.file_type().map_err(io(&from))?;
        if kind.is_dir() {
            link_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(io(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(io(&to))?;
        } else {
            std::fs::hard_link(&from, &to).map_err(io(&to))?;
        }
    }
    // The umask may have stripped bits at creation.
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode)).map_err(io(dest))
}
