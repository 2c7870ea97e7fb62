//! A sandbox's host-side folder (sockets, device nodes, built images), removed with it.

use std::path::PathBuf;

/// Removes the folder, and everything in it, when dropped.
pub struct DirGuard(pub PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl DirGuard {
    /// Keeps the folder: it is no longer removed when this goes.
    pub fn keep(mut self) -> PathBuf {
        let path = std::mem::take(&mut self.0);
        std::mem::forget(self);
        path
    }
}
