//! Materialises a validated [`ZipPlan`] into a fresh directory.

use std::io::{Cursor, Read as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use zip::ZipArchive;

use super::zipcheck::{EntryKind, ZipPlan};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("extracting '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("reading zip entry '{path}': {reason}")]
    Zip { path: String, reason: String },
}

impl ExtractError {
    /// A failure of the host (full or broken disk), not of the package: a service
    /// error for the caller, never InvalidZipFileException.
    pub fn is_host_failure(&self) -> bool {
        match self {
            ExtractError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc::ENOSPC
                        | libc::EDQUOT
                        | libc::EIO
                        | libc::EROFS
                        | libc::ENOMEM
                        | libc::EMFILE
                        | libc::ENFILE
                )
            ),
            ExtractError::Zip { .. } => false,
        }
    }
}

fn io(path: &str) -> impl FnOnce(std::io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Extracts into `dest`, which must be an empty directory. Directories and
/// files come first and symlinks last, so no write ever follows a link.
pub fn extract(zip: &[u8], plan: &ZipPlan, dest: &Path) -> Result<(), ExtractError> {
    // Files written here may be executed by a sandbox: no jail is cloned meanwhile.
    let _writing = crate::jail::CLONE_GATE
        .read()
        .unwrap_or_else(|p| p.into_inner());
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(|e| ExtractError::Zip {
        path: String::new(),
        reason: e.to_string(),
    })?;
    for e in &plan.entries {
        let target = dest.join(&e.path);
        match &e.kind {
            EntryKind::Dir => {
                std::fs::create_dir_all(&target).map_err(io(&e.path))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                    .map_err(io(&e.path))?;
            }
            EntryKind::File { executable, size } => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io(&e.path))?;
                }
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&target)
                    .map_err(io(&e.path))?;
                let file = archive.by_index(e.index).map_err(|err| ExtractError::Zip {
                    path: e.path.clone(),
                    reason: err.to_string(),
                })?;
                let copied =
                    std::io::copy(&mut file.take(size + 1), &mut out).map_err(io(&e.path))?;
                if copied != *size {
                    return Err(ExtractError::Zip {
                        path: e.path.clone(),
                        reason: "size changed since validation".into(),
                    });
                }
                // The umask may have stripped bits at creation.
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io(&e.path))?;
            }
            EntryKind::Symlink { .. } => {}
        }
    }
    for e in &plan.entries {
        if let EntryKind::Symlink { target } = &e.kind {
            let link = dest.join(&e.path);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(io(&e.path))?;
            }
            std::os::unix::fs::symlink(target, &link).map_err(io(&e.path))?;
        }
    }
    Ok(())
}
