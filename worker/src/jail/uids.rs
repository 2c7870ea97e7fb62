//! Host uid/gid ranges for jails, leased for the life of a sandbox and unique on the host
//! across worker processes. Each range is a slot: host ids `base + slot * 65536 ..` A
//! lease is an exclusive `flock` on `<dir>/<first host id>.lock` (named by the range,
//! not the slot, so workers configured with other bases still exclude each other where
//! their ranges coincide), held while the sandbox lives and
//! released by the kernel when the holder closes it or dies, so two live sandboxes never
//! share a host uid, however many supervisors run on the host. No range may contain
//! the gid every jail's root shares ([`super::JAIL_ROOT_GID`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{overlaps_root_gid, ID_RANGE, JAIL_ROOT_GID};

/// Where the host's leases live: on /run, shared by every supervisor.
pub const DEFAULT_DIR: &str = "/run/lambda-microvm/uid-leases";

#[derive(Debug, thiserror::Error)]
pub enum UidLeaseError {
    #[error("uid lease directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("uid lease {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("all {0} host uid ranges are in use")]
    Exhausted(u32),
    #[error("host id ranges from {base} contain the jails' root gid {JAIL_ROOT_GID}")]
    ContainsRootGid { base: u32 },
}

/// Hands out leases on the slots of one lease directory.
#[derive(Debug)]
pub struct UidLeases {
    dir: PathBuf,
    base: u32,
    slots: u32,
    next: AtomicU32,
}

/// One range, held until dropped.
#[derive(Debug)]
pub struct UidLease {
    host_base: u32,
    _lock: File,
}

impl UidLease {
    /// First host uid of the range: the jail's uid 0 (its gid 0 is
    /// [`JAIL_ROOT_GID`], its other ids `host_base + id`).
    pub fn host_base(&self) -> u32 {
        self.host_base
    }
}

impl UidLeases {
    /// `slots` ranges of 65536 ids from `base`; the directory is created (mode 0700).
    pub fn new(dir: &Path, base: u32, slots: u32) -> Result<Self, UidLeaseError> {
        let max = u64::from(base) + u64::from(slots) * u64::from(ID_RANGE);
        if slots == 0 || max > u64::from(u32::MAX) {
            return Err(UidLeaseError::Exhausted(slots));
        }
        if overlaps_root_gid(base, max - u64::from(base)) {
            return Err(UidLeaseError::ContainsRootGid { base });
        }
        std::fs::create_dir_all(dir).map_err(|source| UidLeaseError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| UidLeaseError::Dir {
                path: dir.to_owned(),
                source,
            },
        )?;
        // Start where another process is unlikely to be, to keep the scan short.
        let start = std::process::id().wrapping_mul(2_654_435_761) % slots;
        Ok(Self {
            dir: dir.to_owned(),
            base,
            slots,
            next: AtomicU32::new(start),
        })
    }

    /// The first free range after the last one handed out.
    pub fn acquire(&self) -> Result<UidLease, UidLeaseError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.slots {
            let slot = start.wrapping_add(i) % self.slots;
            let host_base = self.base + slot * ID_RANGE;
            if let Some(lock) = self.try_lock(host_base)? {
                self.next.store(slot.wrapping_add(1), Ordering::Relaxed);
                return Ok(UidLease {
                    host_base,
                    _lock: lock,
                });
            }
        }
        Err(UidLeaseError::Exhausted(self.slots))
    }

    fn try_lock(&self, host_base: u32) -> Result<Option<File>, UidLeaseError> {
        let path = self.dir.join(format!("{host_base}.lock"));
        let err = |source| UidLeaseError::Lock {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(err)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn leases_are_unique_across_holders_and_come_back_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        // Two "supervisors" on one host: separate allocators, one directory.
        let a = UidLeases::new(dir.path(), 1_000_000, 8).unwrap();
        let b = UidLeases::new(dir.path(), 1_000_000, 8).unwrap();
        let mut held = Vec::new();
        for i in 0..8 {
            let l = if i % 2 == 0 { a.acquire() } else { b.acquire() }.unwrap();
            held.push(l);
        }
        let bases: HashSet<u32> = held.iter().map(UidLease::host_base).collect();
        assert_eq!(bases.len(), 8, "no two live leases share a range");
        assert!(bases.iter().all(|b| (b - 1_000_000) % ID_RANGE == 0));
        assert!(matches!(a.acquire(), Err(UidLeaseError::Exhausted(8))));
        let freed = held.remove(3).host_base();
        assert_eq!(b.acquire().unwrap().host_base(), freed);
    }

    #[test]
    fn allocators_with_other_bases_exclude_each_other_where_ranges_meet() {
        let dir = tempfile::tempdir().unwrap();
        let a = UidLeases::new(dir.path(), 1_000_000 + ID_RANGE, 1).unwrap();
        // Slot 1 of `b` is `a`'s only range.
        let b = UidLeases::new(dir.path(), 1_000_000, 2).unwrap();
        let held = a.acquire().unwrap();
        for _ in 0..4 {
            let l = b.acquire().unwrap();
            assert_ne!(l.host_base(), held.host_base());
        }
    }

    #[test]
    fn ranges_must_fit_in_32_bits() {
        let dir = tempfile::tempdir().unwrap();
        assert!(UidLeases::new(dir.path(), 1_000_000, 70_000).is_err());
        assert!(UidLeases::new(dir.path(), 1_000_000, 0).is_err());
    }

    #[test]
    fn ranges_must_not_contain_the_jails_root_gid() {
        let dir = tempfile::tempdir().unwrap();
        let err = UidLeases::new(dir.path(), JAIL_ROOT_GID - ID_RANGE, 2).unwrap_err();
        assert!(
            matches!(err, UidLeaseError::ContainsRootGid { .. }),
            "{err}"
        );
        assert!(UidLeases::new(dir.path(), JAIL_ROOT_GID - ID_RANGE, 1).is_ok());
        assert!(UidLeases::new(dir.path(), JAIL_ROOT_GID + 1, 1).is_ok());
    }
}
