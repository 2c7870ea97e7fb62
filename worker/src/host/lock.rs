//! Exclusive ownership of a data dir: two supervisors on one registry would
//! each garbage-collect the other's in-flight code objects.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("opening lock file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {0} is in use by another supervisor process")]
    Busy(PathBuf),
    #[error("locking {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for the lifetime of the process; the kernel drops the lock when the
/// file is closed or the process dies (including SIGKILL).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let path = data_dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock only reads the descriptor number; `file` owns an open
        // descriptor for the whole call and outlives the lock (kept in Self).
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LockError::Busy(data_dir.to_owned())
            } else {
                LockError::Lock { path, source: err }
            });
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_first_drops() {
        let d = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(d.path()).expect("first");
        assert!(matches!(
            DataDirLock::acquire(d.path()),
            Err(LockError::Busy(_))
        ));
        drop(first);
        assert!(DataDirLock::acquire(d.path()).is_ok());
    }
}
