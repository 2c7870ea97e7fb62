//! The microVM snapshots of SnapStart versions on this host: one per function version
//! and revision, taken after its first Init. Each is a directory holding the vmm's state
//! and memory files and the code and layer images the guest had mounted (a restored
//! guest's page cache must find the very same bytes). A snapshot's memory holds what the
//! function had in memory, its secrets among it: the store is a tmpfs of its own, so
//! nothing of it is ever written to a disk, reachable by jails only (root-owned, group
//! [`crate::jail::JAIL_ROOT_GID`], mode 0710, like a sandbox's files). Snapshots go
//! with their function version, or when the count bound is hit.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::sandbox::dir_guard::DirGuard;
use crate::spec::FunctionVersionSpec;

/// Snapshots kept per host; the oldest goes first past this.
const MAX_SNAPSHOTS: usize = 64;
/// The store's tmpfs may take this share of the host's memory (a bound, not a
/// reservation: tmpfs uses what it holds). A snapshot that does not fit fails to be
/// taken, and its version boots as usual.
const TMPFS_SIZE: &str = "size=25%";

/// Which version and revision a snapshot belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotKey {
    pub name: String,
    pub version: String,
    pub revision: String,
    pub memory_mib: u32,
}

impl SnapshotKey {
    pub fn of(spec: &FunctionVersionSpec) -> Self {
        Self {
            name: spec.name.clone(),
            version: spec.version.clone(),
            revision: spec.revision.clone(),
            memory_mib: spec.memory_mib,
        }
    }

    /// A directory name: function names, versions and revision ids use only
    /// `[A-Za-z0-9_-]`, anything else is replaced.
    fn dir_name(&self) -> String {
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
            "{}.{}.{}.{}",
            clean(&self.name),
            clean(&self.version),
            clean(&self.revision),
            self.memory_mib
        )
    }
}

/// One snapshot's files; removed when the last holder lets go (a restored VM keeps its
/// memory file mapped, which outlives the name).
pub struct Snapshot {
    dir: PathBuf,
    pub state: PathBuf,
    pub mem: PathBuf,
    pub code: Option<PathBuf>,
    pub opt: Option<PathBuf>,
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
    entries: Mutex<Vec<(SnapshotKey, Arc<Snapshot>)>>,
    /// One snapshot is taken at a time: concurrent first cold starts of a version wait
    /// for it instead of each booting their own.
    pub taking: tokio::sync::Mutex<()>,
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
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(to, Some(0), Some(0)).map_err(|e| io_err("chown", to, e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))
}

impl SnapshotStore {
    /// Starts empty in a directory of this process under `run_root`, named like its
    /// sandboxes' so that the stale-entry sweep removes it once the process is gone
    /// (snapshots belong to one run's vmm binary and revisions).
    pub fn new(run_root: &Path) -> std::io::Result<Self> {
        let root = run_root.join(format!("sb-{}-snapshots", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| io_err("creating", &root, e))?;
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
        jail_readable_dir(&root)?;
        Ok(Self {
            root,
            mounted,
            entries: Mutex::new(Vec::new()),
            taking: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SnapshotKey, Arc<Snapshot>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &SnapshotKey) -> Option<Arc<Snapshot>> {
        self.lock()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.clone())
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

    /// Drops the snapshot of `key` (a restore from it failed).
    pub fn forget(&self, key: &SnapshotKey) {
        self.lock().retain(|(k, _)| k != key);
    }

    /// Drops the snapshots of a deleted function, or of one deleted version.
    pub fn forget_function(&self, name: &str, version: Option<&str>) {
        self.lock()
            .retain(|(k, _)| k.name != name || version.is_some_and(|v| k.version != v));
    }

    /// Files what a VM left after writing its snapshot; replaces other revisions of the
    /// same version.
    pub fn store(&self, key: SnapshotKey, taken: Taken<'_>) -> std::io::Result<Arc<Snapshot>> {
        let dir = self.root.join(key.dir_name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        let snap = Snapshot {
            state: dir.join("state"),
            mem: dir.join("mem"),
            code: taken.code.map(|_| dir.join("code.ext4")),
            opt: taken.opt.map(|_| dir.join("opt.ext4")),
            dir: dir.clone(),
        };
        place(&taken.written.join("state"), &snap.state, false)?;
        place(&taken.written.join("mem"), &snap.mem, false)?;
        for (from, to) in [(taken.code, &snap.code), (taken.opt, &snap.opt)] {
            if let (Some(from), Some(to)) = (from, to) {
                place(from, to, true)?;
            }
        }
        jail_readable_dir(&dir)?;
        let snap = Arc::new(snap);
        let mut entries = self.lock();
        entries.retain(|(k, _)| (&k.name, &k.version) != (&key.name, &key.version));
        if entries.len() >= MAX_SNAPSHOTS {
            entries.remove(0);
        }
        entries.push((key, snap.clone()));
        Ok(snap)
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
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn key(name: &str, version: &str, revision: &str) -> SnapshotKey {
        SnapshotKey {
            name: name.into(),
            version: version.into(),
            revision: revision.into(),
            memory_mib: 128,
        }
    }

    /// What a vmm leaves in the scratch folder, plus a code image elsewhere.
    fn take(store: &SnapshotStore, id: &str, code: &Path) -> DirGuard {
        let out = store.scratch(id).unwrap();
        std::fs::write(out.0.join("state"), b"state").unwrap();
        std::fs::write(out.0.join("mem"), b"memory").unwrap();
        std::fs::write(code, b"code image").unwrap();
        out
    }

    #[test]
    fn snapshots_are_filed_readable_by_jails_replaced_by_revision_and_forgotten() {
        let run = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(run.path()).unwrap();
        let code = run.path().join("code.ext4");
        let out = take(&store, "sb-1", &code);
        let k1 = key("f", "1", "rev-a");
        let taken = Taken {
            written: &out.0,
            code: Some(&code),
            opt: None,
        };
        let snap = store.store(k1.clone(), taken).unwrap();
        assert_eq!(std::fs::read(&snap.mem).unwrap(), b"memory");
        assert_eq!(
            std::fs::read(snap.code.as_ref().unwrap()).unwrap(),
            b"code image"
        );
        assert!(snap.opt.is_none());
        let dir = std::fs::metadata(snap.state.parent().unwrap()).unwrap();
        assert_eq!(
            (dir.uid(), dir.gid(), dir.mode() & 0o777),
            (0, crate::jail::JAIL_ROOT_GID, 0o710)
        );
        assert_eq!(std::fs::metadata(&snap.mem).unwrap().mode() & 0o777, 0o644);
        assert!(store.get(&k1).is_some());

        // A new revision of the same version replaces it; another version stays.
        let out = take(&store, "sb-2", &code);
        let k2 = key("f", "1", "rev-b");
        let taken = Taken {
            written: &out.0,
            code: None,
            opt: None,
        };
        store.store(k2.clone(), taken).unwrap();
        assert!(store.get(&k1).is_none() && store.get(&k2).is_some());
        let out = take(&store, "sb-3", &code);
        let k3 = key("f", "2", "rev-c");
        let taken = Taken {
            written: &out.0,
            code: None,
            opt: None,
        };
        store.store(k3.clone(), taken).unwrap();
        // The files of a replaced snapshot go once nothing holds them.
        drop(snap);
        assert_eq!(
            std::fs::read_dir(&store.root).unwrap().count(),
            5,
            "2 snapshots + 3 scratch"
        );

        store.forget_function("f", Some("2"));
        assert!(store.get(&k3).is_none() && store.get(&k2).is_some());
        store.forget_function("f", None);
        assert!(store.get(&k2).is_none());
    }

    #[test]
    fn key_folder_names_keep_to_safe_characters() {
        let k = key("my-fn_1", "12", "5b2a/../x y");
        assert_eq!(k.dir_name(), "my-fn_1.12.5b2a____x_y.128");
    }
}
