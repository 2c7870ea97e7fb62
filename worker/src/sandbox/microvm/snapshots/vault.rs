//! Snapshots at rest: each file of a snapshot sealed with AES-256-GCM ([`sealed_file`])
//! in a folder of the vault, with a sealed description naming its version, revision and
//! base images. The vault is the store of record; the tmpfs copies a restore maps are
//! opened from it (authenticated, so a tampered file never reaches a guest).
//!
//! With a key that outlives the process (the embedded frontend derives one from its
//! master key) snapshots survive a restart. With a key of this process only, what an
//! earlier process left cannot be opened and is removed at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::sealed_file::{self, open_bytes, seal_bytes, SealError, VaultKey};
use super::{SnapshotKey, VaultBounds};

/// The files a snapshot may hold; `code.ext4` and `opt.ext4` only when the guest had
/// them attached.
pub const FILES: [&str; 4] = ["state", "mem", "code.ext4", "opt.ext4"];
const META: &str = "meta.sealed";
/// Description files are small; anything larger is not ours.
const MAX_META_BYTES: u64 = 64 << 10;
/// Snapshots kept in the vault at most, besides its byte bound.
const MAX_ENTRIES: usize = 256;
/// The vault takes at most this share of its file system (which it may share with the
/// registry and the code store: a full disk must not stop them).
const MAX_SHARE_OF_FS: u64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: unreadable snapshot description")]
    Meta(PathBuf),
    #[error("describing the snapshot: {0}")]
    Describe(String),
    #[error("no snapshot of this version in the vault")]
    Missing,
    #[error("{needed} bytes would leave too little free on the vault's file system")]
    NoRoom { needed: u64 },
}

impl VaultError {
    /// The sealed snapshot itself is bad (tampered with, or not ours): drop it.
    /// Anything else (a full tmpfs, a failing disk) may pass.
    pub fn is_not_authentic(&self) -> bool {
        matches!(
            self,
            Self::Seal(SealError::NotAuthentic(..)) | Self::Meta(_)
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Bytes the files of [`FILES`] in `dir` take on disk (holes not counted).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    FILES
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// What a vault folder holds, sealed as its `meta.sealed`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    key: SnapshotKey,
    /// Random per sealing and bound into every file's context: files of two sealings
    /// of one key never open together.
    id: String,
    files: Vec<String>,
}

struct Entry {
    folder: String,
    bytes: u64,
    last_use: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<SnapshotKey, Entry>,
    total: u64,
    clock: u64,
}

pub struct Vault {
    dir: PathBuf,
    key: VaultKey,
    max_bytes: u64,
    keep_free_percent: u64,
    index: Mutex<Index>,
}

/// A snapshot sealed into a temporary folder of the vault, not yet filed.
pub struct Sealed {
    tmp: PathBuf,
    bytes: u64,
    filed: bool,
}

impl Drop for Sealed {
    fn drop(&mut self) {
        if !self.filed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Folders renamed aside, to be removed by [`Vault::discard`].
#[must_use]
pub struct Doomed(Vec<PathBuf>);

fn context(folder: &str, id: &str, file: &str) -> Vec<u8> {
    format!("lambda-microvm snapshot {folder} {id}/{file}").into_bytes()
}

fn random_hex<const N: usize>() -> Result<String, VaultError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

impl Vault {
    /// Opens (creating, mode 0700) `dir`, indexing the snapshots it holds that open
    /// under `key` and removing everything else (what a crash left half-written or
    /// half-removed, another key's snapshots).
    pub fn open(dir: &Path, key: VaultKey, bounds: VaultBounds) -> Result<Self, VaultError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let (fs_total, _) = crate::fsinfo::space(dir).map_err(io(dir))?;
        let vault = Self {
            dir: dir.to_owned(),
            key,
            max_bytes: bounds.max_bytes.min(fs_total / MAX_SHARE_OF_FS),
            keep_free_percent: bounds.keep_free_percent.min(100),
            index: Mutex::new(Index::default()),
        };
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let path = entry.path();
            let folder = entry.file_name().to_string_lossy().into_owned();
            match vault.describe(&folder) {
                Ok(meta) if meta.key.folder_name() == folder => {
                    let mut ix = vault.lock();
                    let bytes = dir_bytes(&path);
                    ix.total += bytes;
                    let entry = Entry {
                        folder,
                        bytes,
                        last_use: 0,
                    };
                    ix.entries.insert(meta.key, entry);
                }
                _ => {
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        let evicted = evict(&mut vault.lock(), vault.max_bytes, None);
        let doomed = vault.set_aside(evicted);
        vault.discard(doomed);
        Ok(vault)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (snapshots held, bytes held).
    pub fn held(&self) -> (usize, u64) {
        let ix = self.lock();
        (ix.entries.len(), ix.total)
    }

    pub fn contains(&self, key: &SnapshotKey) -> bool {
        self.lock().entries.contains_key(key)
    }

    fn describe(&self, folder: &str) -> Result<Meta, VaultError> {
        let path = self.dir.join(folder).join(META);
        let size = std::fs::metadata(&path).map_err(io(&path))?.len();
        if size > MAX_META_BYTES {
            return Err(VaultError::Meta(path));
        }
        let sealed = std::fs::read(&path).map_err(io(&path))?;
        let plain = open_bytes(&self.key, &context(folder, "", META), &sealed, &path)?;
        serde_json::from_slice(&plain).map_err(|_| VaultError::Meta(path))
    }

    /// Seals the snapshot files in `from` (those of [`FILES`] present) into a
    /// temporary folder, to be filed with [`Vault::file`].
    pub fn seal(&self, key: &SnapshotKey, from: &Path) -> Result<Sealed, VaultError> {
        let needed = allocated(from);
        let (total, free) = crate::fsinfo::space(&self.dir).map_err(io(&self.dir))?;
        if needed > self.max_bytes
            || free < needed.saturating_add(total / 100 * self.keep_free_percent)
        {
            return Err(VaultError::NoRoom { needed });
        }
        let folder = key.folder_name();
        let id = random_hex::<16>()?;
        let tmp = self.dir.join(format!(".tmp-{folder}-{id}"));
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        let mut sealed = Sealed {
            tmp,
            bytes: 0,
            filed: false,
        };
        let mut files = Vec::new();
        for f in FILES {
            let src = from.join(f);
            if src.exists() {
                let ctx = context(&folder, &id, f);
                let to = sealed.tmp.join(f);
                sealed.bytes += sealed_file::seal_file(&self.key, &ctx, &src, &to)?;
                files.push(f.to_owned());
            }
        }
        let meta = Meta {
            key: key.clone(),
            id,
            files,
        };
        let meta = serde_json::to_vec(&meta).map_err(|e| VaultError::Describe(e.to_string()))?;
        let meta = seal_bytes(&self.key, &context(&folder, "", META), &meta)?;
        let path = sealed.tmp.join(META);
        std::fs::write(&path, &meta).map_err(io(&path))?;
        sealed.bytes += meta.len() as u64;
        Ok(sealed)
    }

    /// Files a sealed snapshot under its key, replacing one of the same key and
    /// dropping other revisions (or bases) of its version, then evicts the least
    /// recently used beyond the bounds. Only renames: what goes is returned, to be
    /// [discarded](Vault::discard) outside any lock.
    pub fn file(&self, key: SnapshotKey, mut sealed: Sealed) -> Result<Doomed, VaultError> {
        let folder = key.folder_name();
        let to = self.dir.join(&folder);
        let mut gone = Vec::new();
        let mut ix = self.lock();
        let same_version: Vec<SnapshotKey> = ix
            .entries
            .keys()
            .filter(|k| (&k.name, &k.version) == (&key.name, &key.version))
            .cloned()
            .collect();
        for k in same_version {
            if let Some(e) = ix.entries.remove(&k) {
                ix.total -= e.bytes;
                gone.push(e.folder);
            }
        }
        // Whatever still sits under the name (not indexed: a crash's leftover) goes too.
        let mut doomed = self.set_aside(gone);
        if to.exists() {
            doomed.0.extend(self.set_aside(vec![folder.clone()]).0);
        }
        std::fs::rename(&sealed.tmp, &to).map_err(io(&to))?;
        sealed.filed = true;
        ix.clock += 1;
        let entry = Entry {
            folder,
            bytes: sealed.bytes,
            last_use: ix.clock,
        };
        ix.total += entry.bytes;
        ix.entries.insert(key.clone(), entry);
        let evicted = evict(&mut ix, self.max_bytes, Some(&key));
        doomed.0.extend(self.set_aside(evicted).0);
        Ok(doomed)
    }

    /// Opens the snapshot of `key` into `to` (an empty folder): its files, checked.
    pub fn open_into(&self, key: &SnapshotKey, to: &Path) -> Result<Vec<String>, VaultError> {
        let folder = {
            let mut ix = self.lock();
            ix.clock += 1;
            let now = ix.clock;
            let e = ix.entries.get_mut(key).ok_or(VaultError::Missing)?;
            e.last_use = now;
            e.folder.clone()
        };
        let meta = self.describe(&folder)?;
        if &meta.key != key {
            return Err(VaultError::Meta(self.dir.join(&folder)));
        }
        for f in &meta.files {
            if !FILES.contains(&f.as_str()) {
                return Err(VaultError::Meta(self.dir.join(&folder)));
            }
            let src = self.dir.join(&folder).join(f);
            let ctx = context(&folder, &meta.id, f);
            sealed_file::open_file(&self.key, &ctx, &src, &to.join(f))?;
        }
        Ok(meta.files)
    }

    /// Drops the snapshots `doomed` selects from the index; their folders are set
    /// aside, to be [discarded](Vault::discard).
    pub fn forget_where(&self, doomed: impl Fn(&SnapshotKey) -> bool) -> Doomed {
        let mut gone = Vec::new();
        let mut ix = self.lock();
        let keys: Vec<SnapshotKey> = ix.entries.keys().filter(|k| doomed(k)).cloned().collect();
        for k in keys {
            if let Some(e) = ix.entries.remove(&k) {
                ix.total -= e.bytes;
                gone.push(e.folder);
            }
        }
        self.set_aside(gone)
    }

    /// Renames folders out of the way at once (a snapshot filed next under the same
    /// name must not be removed with them).
    fn set_aside(&self, folders: Vec<String>) -> Doomed {
        let mut aside = Vec::new();
        for f in folders {
            let Ok(tag) = random_hex::<8>() else { continue };
            let to = self.dir.join(format!(".trash-{f}-{tag}"));
            if std::fs::rename(self.dir.join(&f), &to).is_ok() {
                aside.push(to);
            }
        }
        Doomed(aside)
    }

    /// Removes set-aside folders on a thread of their own (large files take a while to
    /// unlink; callers may be on async threads). What a crash leaves, the next open
    /// removes.
    pub fn discard(&self, doomed: Doomed) {
        if doomed.0.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("vault-discard".into())
            .spawn(move || {
                for d in doomed.0 {
                    let _ = std::fs::remove_dir_all(d);
                }
            });
        if let Err(e) = spawned {
            eprintln!("worker: snapshot vault: no thread to remove old snapshots ({e})");
        }
    }
}

/// Drops least recently used entries (never `keep`) until both bounds hold; returns
/// their folders.
fn evict(ix: &mut Index, max_bytes: u64, keep: Option<&SnapshotKey>) -> Vec<String> {
    let mut gone = Vec::new();
    while ix.total > max_bytes || ix.entries.len() > MAX_ENTRIES {
        let victim = ix
            .entries
            .iter()
            .filter(|(k, _)| Some(*k) != keep)
            .min_by_key(|(_, e)| e.last_use)
            .map(|(k, _)| k.clone());
        let Some(victim) = victim else { break };
        if let Some(e) = ix.entries.remove(&victim) {
            ix.total -= e.bytes;
            gone.push(e.folder);
        }
    }
    gone
}
