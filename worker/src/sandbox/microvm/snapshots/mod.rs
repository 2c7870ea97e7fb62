//! The microVM snapshots of SnapStart versions on this host: one per function version,
//! revision and base images, taken after its first Init. A snapshot is the vmm's state
//! and memory files plus the code and layer images the guest had mounted (a restored
//! guest's page cache must find the very same bytes).
//!
//! Two tiers. The [`vault`] keeps every snapshot sealed with AES-256-GCM on disk: the
//! store of record, which a snapshot's memory (the function's secrets among it) reaches
//! only encrypted. Restores map plaintext copies, which live only in a tmpfs of their own
//! (RAM, never a disk), reachable by jails only (root-owned, group
//! [`crate::jail::JAIL_ROOT_GID`], mode 0710, like a sandbox's files); the least
//! recently used copies go past a bound, and are opened again from the vault when next
//! needed. Snapshots go with their function version.

pub mod base;
pub mod sealed_file;
pub mod vault;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sandbox::dir_guard::DirGuard;
use crate::spec::FunctionVersionSpec;
pub use base::{base_fingerprint, DigestCache};
use sealed_file::VaultKey;
use vault::{Vault, VaultError};

/// Plaintext copies kept in the tmpfs; the least recently used goes first past this.
const MAX_OPEN: usize = 16;
/// Without a vault the copies are all there is: keep more of them.
const MAX_OPEN_WITHOUT_VAULT: usize = 64;
/// The tmpfs may take this share of the host's memory (a bound, not a reservation:
/// tmpfs uses what it holds). A snapshot that does not fit fails to be taken or
/// opened, and its version boots as usual.
const TMPFS_SIZE: &str = "size=25%";
/// The vault's bound when its settings give none.
pub const DEFAULT_VAULT_BYTES: u64 = 32 << 30;

/// How much of its file system the vault may use.
#[derive(Clone, Copy, Debug)]
pub struct VaultBounds {
    /// Sealed bytes held at most (the least recently used go first past it).
    pub max_bytes: u64,
    /// A snapshot is sealed only if this share (percent) of the file system stays
    /// free after it.
    pub keep_free_percent: u64,
}

impl Default for VaultBounds {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_VAULT_BYTES,
            keep_free_percent: 10,
        }
    }
}

/// Where sealed snapshots are kept and the key they are sealed under. A key that
/// outlives the process lets snapshots survive a restart.
#[derive(Clone)]
pub struct VaultSettings {
    pub dir: PathBuf,
    pub key: zeroize::Zeroizing<[u8; 32]>,
    pub bounds: VaultBounds,
}

impl std::fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSettings")
            .field("dir", &self.dir)
            .field("key", &"<redacted>")
            .field("bounds", &self.bounds)
            .finish()
    }
}

/// Which version and revision a snapshot belongs to, and what it was taken on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SnapshotKey {
    pub name: String,
    pub version: String,
    pub revision: String,
    pub memory_mib: u32,
    /// The vmm, kernel and rootfs image the guest was started from (see
    /// [`base_fingerprint`]): a snapshot is only resumed on the very same.
    pub base: String,
}

impl SnapshotKey {
    pub fn of(spec: &FunctionVersionSpec, base: String) -> Self {
        Self {
            name: spec.name.clone(),
            version: spec.version.clone(),
            revision: spec.revision.clone(),
            memory_mib: spec.memory_mib,
            base,
        }
    }

    /// A folder name: function names, versions and revision ids use only
    /// `[A-Za-z0-9_-]`, anything else is replaced.
    fn folder_name(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        format!(
            "{}.{}.{}.{}.{}",
            clean(&self.name),
            clean(&self.version),
            clean(&self.revision),
            self.memory_mib,
            clean(&self.base.chars().take(16).collect::<String>())
        )
    }
}

/// One snapshot's plaintext copy; removed when the last holder lets go (a restored VM
/// keeps its memory file mapped, which outlives the name).
pub struct Snapshot {
    dir: PathBuf,
    /// The store's forget count when this copy was made (see `SnapshotStore::seal`).
    epoch: u64,
    pub state: PathBuf,
    pub mem: PathBuf,
    pub code: Option<PathBuf>,
    pub opt: Option<PathBuf>,
}

impl Snapshot {
    /// The files in `dir`, the images among them only when present.
    fn in_dir(dir: PathBuf, epoch: u64) -> Self {
        let optional = |f: &str| Some(dir.join(f)).filter(|p| p.exists());
        Self {
            epoch,
            state: dir.join("state"),
            mem: dir.join("mem"),
            code: optional("code.ext4"),
            opt: optional("opt.ext4"),
            dir,
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a VM booted to be snapshotted left: the directory the vmm wrote into and the
/// images it had attached.
pub struct Taken<'a> {
    pub written: &'a Path,
    pub code: Option<&'a Path>,
    pub opt: Option<&'a Path>,
}

pub struct SnapshotStore {
    root: PathBuf,
    /// `root` is the store's own tmpfs (unmounted when the store goes).
    mounted: bool,
    /// The plaintext copies, least recently used first.
    open: Mutex<Vec<(SnapshotKey, Arc<Snapshot>)>>,
    /// `None` when the run dir, where a vault of this process would go, is in memory
    /// itself: sealed copies there would only double the memory snapshots take.
    vault: Option<Vault>,
    /// Numbers the copies' folders (a copy still held after its key was dropped and
    /// taken again never shares, or removes, the new one's folder) and snapshot VMs.
    serial: AtomicU64,
    /// Counts forgets: a copy sealed or opened while one happened is only kept if it
    /// was not the one forgotten.
    forgets: AtomicU64,
    /// One gate per snapshot key: concurrent first cold starts of a version wait for
    /// the one taking (or opening) its snapshot instead of each booting their own;
    /// other versions' go ahead.
    taking: Mutex<HashMap<SnapshotKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Digests of the base files snapshots are keyed by.
    pub digests: DigestCache,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Moves (or, across file systems, copies) `from` to `to`, readable by the jails.
fn place(from: &Path, to: &Path, link: bool) -> std::io::Result<()> {
    let moved = if link {
        std::fs::hard_link(from, to)
    } else {
        std::fs::rename(from, to)
    };
    if moved.is_err() {
        std::fs::copy(from, to).map_err(|e| io_err("copying", from, e))?;
    }
    make_jail_readable(to)
}

fn make_jail_readable(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(file, Some(0), Some(0)).map_err(|e| io_err("chown", file, e))?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))
}

impl SnapshotStore {
    /// Starts with no plaintext copies, in a directory of this process under
    /// `run_root` named like its sandboxes' so that the stale-entry sweep removes it once
    /// the process is gone. Without `vault` settings the vault is a folder beside it
    /// under a key of this process, unless that folder would be in memory too.
    pub fn new(run_root: &Path, vault: Option<&VaultSettings>) -> Result<Self, VaultError> {
        let root = run_root.join(format!("sb-{}-snapshots", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| vault_io(&root, e))?;
        let mounted = match mount_tmpfs(&root) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "worker: no tmpfs for snapshots ({e}): SnapStart snapshots go to {} \
                     on its file system",
                    root.display()
                );
                false
            }
        };
        jail_readable_dir(&root).map_err(|e| vault_io(&root, e))?;
        let vault = match vault {
            Some(v) => Some(Vault::open(&v.dir, VaultKey::new(&v.key), v.bounds)?),
            None if crate::fsinfo::in_memory(run_root) => {
                eprintln!(
                    "worker: {} is in memory: SnapStart snapshots are kept in memory only, \
                     unsealed copies in no vault",
                    run_root.display()
                );
                None
            }
            None => {
                let dir = run_root.join(format!("sb-{}-snapshot-vault", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                Some(Vault::open(
                    &dir,
                    VaultKey::random()?,
                    VaultBounds::default(),
                )?)
            }
        };
        Ok(Self {
            root,
            mounted,
            open: Mutex::new(Vec::new()),
            vault,
            serial: AtomicU64::new(0),
            forgets: AtomicU64::new(0),
            taking: Mutex::new(HashMap::new()),
            digests: DigestCache::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SnapshotKey, Arc<Snapshot>)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate of `key`'s snapshot (see `taking`); gates nobody holds are dropped.
    pub fn gate(&self, key: &SnapshotKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.taking.lock().unwrap_or_else(|p| p.into_inner());
        gates.retain(|_, g| Arc::strong_count(g) > 1);
        gates.entry(key.clone()).or_default().clone()
    }

    /// (snapshots in the vault, their sealed bytes); `None` without a vault.
    pub fn vault_held(&self) -> Option<(usize, u64)> {
        self.vault.as_ref().map(Vault::held)
    }

    /// The plaintext copy of `key`, if one is open (now the most recently used).
    pub fn get(&self, key: &SnapshotKey) -> Option<Arc<Snapshot>> {
        let mut open = self.lock();
        let at = open.iter().position(|(k, _)| k == key)?;
        let entry = open.remove(at);
        let snap = entry.1.clone();
        open.push(entry);
        Some(snap)
    }

    /// A new folder in the store for a VM booted to be snapshotted to write into
    /// (`written` of [`Taken`]): the memory file never leaves the tmpfs, and moving it
    /// into place keeps its holes.
    pub fn scratch(&self, sandbox_id: &str) -> std::io::Result<DirGuard> {
        let dir = self.root.join(format!("taking-{sandbox_id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| io_err("creating", &dir, e))?;
        Ok(DirGuard(dir))
    }

    /// A sandbox id for a VM booted to be snapshotted (named like the pool's, so the
    /// stale-entry sweep knows its owner).
    pub fn take_id(&self) -> String {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        format!("sb-{}-snap{n}", std::process::id())
    }

    /// Drops the snapshot of `key` (a restore from it failed), sealed copy included.
    pub fn forget(&self, key: &SnapshotKey) {
        self.forget_where(|k| k == key);
    }

    /// Drops the snapshots of a deleted function, or of one deleted version.
    pub fn forget_function(&self, name: &str, version: Option<&str>) {
        self.forget_where(|k| k.name == name && version.is_none_or(|v| k.version == v));
    }

    /// Sealed folders are renamed aside at once and removed by a thread of their own;
    /// plaintext copies go when their last holder lets go, outside the lock.
    fn forget_where(&self, doomed: impl Fn(&SnapshotKey) -> bool) {
        let _gone: Vec<_> = {
            let mut open = self.lock();
            self.forgets.fetch_add(1, Ordering::SeqCst);
            let (gone, kept) = std::mem::take(&mut *open)
                .into_iter()
                .partition(|(k, _)| doomed(k));
            *open = kept;
            gone
        };
        if let Some(v) = &self.vault {
            v.discard(v.forget_where(doomed));
        }
    }

    /// A new, empty folder for a plaintext copy of `key`.
    fn copy_dir(&self, key: &SnapshotKey) -> std::io::Result<PathBuf> {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{}.{n}", key.folder_name()));
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        Ok(dir)
    }

    /// Files what a VM left after writing its snapshot as the open copy of `key`
    /// (replacing other revisions of the same version); [`SnapshotStore::seal`] then
    /// puts it in the vault.
    pub fn store(&self, key: SnapshotKey, taken: Taken<'_>) -> std::io::Result<Arc<Snapshot>> {
        let epoch = self.forgets.load(Ordering::SeqCst);
        let dir = self.copy_dir(&key)?;
        let guard = DirGuard(dir.clone());
        place(&taken.written.join("state"), &dir.join("state"), false)?;
        place(&taken.written.join("mem"), &dir.join("mem"), false)?;
        for (from, to) in [(taken.code, "code.ext4"), (taken.opt, "opt.ext4")] {
            if let Some(from) = from {
                place(from, &dir.join(to), true)?;
            }
        }
        jail_readable_dir(&dir)?;
        let snap = Arc::new(Snapshot::in_dir(guard.keep(), epoch));
        self.keep_open(key, snap.clone());
        Ok(snap)
    }

    fn keep_open(&self, key: SnapshotKey, snap: Arc<Snapshot>) {
        let _gone = self.keep_open_locked(&mut self.lock(), key, snap);
    }

    /// Adds a copy, returning those it displaces (other revisions of its version, the
    /// least recently used past the bound), for the caller to drop after the lock.
    #[must_use]
    fn keep_open_locked(
        &self,
        open: &mut Vec<(SnapshotKey, Arc<Snapshot>)>,
        key: SnapshotKey,
        snap: Arc<Snapshot>,
    ) -> Vec<Arc<Snapshot>> {
        let bound = if self.vault.is_some() {
            MAX_OPEN
        } else {
            MAX_OPEN_WITHOUT_VAULT
        };
        let same_version = |k: &SnapshotKey| (&k.name, &k.version) == (&key.name, &key.version);
        let mut gone: Vec<Arc<Snapshot>> = Vec::new();
        open.retain(|(k, s)| {
            let keep = !same_version(k);
            if !keep {
                gone.push(s.clone());
            }
            keep
        });
        if open.len() >= bound {
            gone.push(open.remove(0).1);
        }
        open.push((key, snap));
        gone
    }

    /// Whether the vault holds a sealed copy of `key`.
    pub fn sealed(&self, key: &SnapshotKey) -> bool {
        self.vault.as_ref().is_some_and(|v| v.contains(key))
    }

    pub fn has_vault(&self) -> bool {
        self.vault.is_some()
    }

    /// Seals a newly taken snapshot into the vault (blocking: run it off the async
    /// threads). A snapshot forgotten or replaced meanwhile is not filed; one whose
    /// plaintext copy was merely evicted is.
    pub fn seal(&self, key: &SnapshotKey, snap: &Arc<Snapshot>) -> Result<(), VaultError> {
        let Some(vault) = &self.vault else {
            return Ok(());
        };
        let sealed = vault.seal(key, &snap.dir)?;
        // Checked and filed under the lock forgets take first.
        let replaced = {
            let open = self.lock();
            let current = self.forgets.load(Ordering::SeqCst) == snap.epoch
                || open.iter().any(|(k, s)| k == key && Arc::ptr_eq(s, snap));
            if !current {
                return Ok(());
            }
            vault.file(key.clone(), sealed)?
        };
        vault.discard(replaced);
        Ok(())
    }

    /// Opens the vault's snapshot of `key` into a new plaintext copy (blocking). `None`
    /// when the vault has none; an error when it fails authentication (then dropped).
    pub fn open_sealed(&self, key: &SnapshotKey) -> Result<Option<Arc<Snapshot>>, VaultError> {
        let Some(vault) = self.vault.as_ref().filter(|v| v.contains(key)) else {
            return Ok(None);
        };
        let epoch = self.forgets.load(Ordering::SeqCst);
        let dir = self.copy_dir(key).map_err(|e| vault_io(&self.root, e))?;
        let guard = DirGuard(dir.clone());
        match vault.open_into(key, &dir) {
            Ok(files) => {
                for f in &files {
                    make_jail_readable(&dir.join(f)).map_err(|e| vault_io(&dir, e))?;
                }
                jail_readable_dir(&dir).map_err(|e| vault_io(&dir, e))?;
            }
            // A full tmpfs or a failing disk is no reason to drop it.
            Err(e) if e.is_not_authentic() => {
                vault.discard(vault.forget_where(|k| k == key));
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        let snap = Arc::new(Snapshot::in_dir(guard.keep(), epoch));
        let mut open = self.lock();
        // A forget meanwhile may have been this version's: then the copy serves only
        // the cold start that opened it.
        let gone = if self.forgets.load(Ordering::SeqCst) == epoch {
            self.keep_open_locked(&mut open, key.clone(), snap.clone())
        } else {
            Vec::new()
        };
        drop(open);
        drop(gone);
        Ok(Some(snap))
    }
}

fn vault_io(path: &Path, source: std::io::Error) -> VaultError {
    VaultError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Drop for SnapshotStore {
    fn drop(&mut self) {
        self.lock().clear();
        if self.mounted {
            if let Ok(target) = std::ffi::CString::new(self.root.as_os_str().as_bytes()) {
                // SAFETY: a NUL-terminated path; MNT_DETACH only unmounts.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn mount_tmpfs(root: &Path) -> std::io::Result<()> {
    let cstr = |s: &[u8]| {
        std::ffi::CString::new(s)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (fs, target, data) = (
        cstr(b"tmpfs")?,
        cstr(root.as_os_str().as_bytes())?,
        cstr(format!("{TMPFS_SIZE},mode=0710").as_bytes())?,
    );
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            fs.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn jail_readable_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, Some(0), Some(crate::jail::JAIL_ROOT_GID))
        .map_err(|e| io_err("chown", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))
        .map_err(|e| io_err("chmod", dir, e))
}

#[cfg(test)]
mod tests;
