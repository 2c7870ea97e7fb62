//! Sealed chunks on disk, one file each under `<dir>/<first two hex digits>/<id>`,
//! stored once however many images hold them. A file is written whole to a temporary
//! name and renamed into place, so a reader sees a complete chunk or none.
//!
//! Garbage collection deletes every chunk outside the set the caller says is still
//! referenced. The caller owns that set (the registry of image manifests), so it must
//! include the images being written while it collects; the store serialises its own
//! writes and collections with one lock.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::bound::Lru;
use crate::convergent::{ChunkId, SealedChunk, MAX_SEALED_LEN};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} is not in the store")]
    Missing(ChunkId),
    #[error("chunk {id} is {len} bytes on disk, more than a sealed chunk can be")]
    Oversized { id: ChunkId, len: u64 },
    #[error("chunk store I/O at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Bytes offered as a chunk that do not hash to its id (a copy from another host).
    #[error("bytes offered as chunk {0} do not match its id")]
    NotThatChunk(ChunkId),
}

impl StoreError {
    /// Whether trying again may succeed (I/O can; a missing or oversized chunk won't).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one collection removed and kept.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    pub removed_chunks: u64,
    pub removed_bytes: u64,
    pub kept_chunks: u64,
}

#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    lock: Mutex<()>,
    next_tmp: AtomicU64,
    /// Set for a store of copies kept under a byte bound (see [`crate::bound`]).
    bound: Option<Mutex<Lru>>,
    evicted: AtomicU64,
}

impl ChunkStore {
    /// Opens (creating, mode 0700) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_at(&dir))?;
        Ok(Self {
            dir,
            lock: Mutex::new(()),
            next_tmp: AtomicU64::new(0),
            bound: None,
            evicted: AtomicU64::new(0),
        })
    }

    /// Opens a store of copies that keeps at most `max_bytes` of chunks, deleting the
    /// least recently used beyond that (a chunk larger than the bound is kept alone).
    /// Chunks already in `dir` count, oldest first in no particular order.
    pub fn open_bounded(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self, StoreError> {
        let mut store = Self::open(dir)?;
        let mut lru = Lru::new(max_bytes);
        let mut victims = Vec::new();
        for (id, len) in store.list()? {
            victims.extend(lru.insert(id, len));
        }
        store.bound = Some(Mutex::new(lru));
        store.remove_evicted(&victims);
        Ok(store)
    }

    /// Bytes held under the bound (0 for an unbounded store).
    pub fn bounded_bytes(&self) -> u64 {
        self.with_bound(|lru| lru.total()).unwrap_or(0)
    }

    /// Chunks deleted to stay under the bound since the store was opened.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn with_bound<T>(&self, f: impl FnOnce(&mut Lru) -> T) -> Option<T> {
        let bound = self.bound.as_ref()?;
        Some(f(&mut bound.lock().unwrap_or_else(|p| p.into_inner())))
    }

    fn remove_evicted(&self, victims: &[ChunkId]) {
        for id in victims {
            // Already gone is fine: the bound only needs the bytes back.
            let _ = fs::remove_file(self.path(id));
        }
        self.evicted
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.path(id).exists()
    }

    /// Stores a chunk unless it is there already; true when it was new.
    pub fn put(&self, chunk: &SealedChunk) -> Result<bool, StoreError> {
        self.put_bytes(&chunk.id(), chunk.bytes())
    }

    /// Stores sealed bytes copied from another store (a worker's copy of a frontend's
    /// chunk), after checking that they are chunk `id` and no larger than a chunk.
    pub fn put_copy(&self, id: &ChunkId, sealed: &[u8]) -> Result<bool, StoreError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(StoreError::Oversized {
                id: *id,
                len: sealed.len() as u64,
            });
        }
        if ChunkId::of_sealed(sealed) != *id {
            return Err(StoreError::NotThatChunk(*id));
        }
        self.put_bytes(id, sealed)
    }

    fn put_bytes(&self, id: &ChunkId, sealed: &[u8]) -> Result<bool, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(id);
        if path.exists() {
            return Ok(false);
        }
        let parent = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent).map_err(io_at(parent))?;
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".tmp-{}-{n}", std::process::id()));
        fs::write(&tmp, sealed).map_err(io_at(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        if let Some(victims) = self.with_bound(|lru| lru.insert(*id, sealed.len() as u64)) {
            self.remove_evicted(&victims);
        }
        Ok(true)
    }

    /// The sealed bytes of a chunk, bounded by the largest sealed chunk. They are not
    /// checked here: [`crate::convergent::open`] checks them against the id and key.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let path = self.path(id);
        let file = match fs::File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(*id)),
            other => other.map_err(io_at(&path))?,
        };
        let mut bytes = Vec::with_capacity(MAX_SEALED_LEN);
        let limit = MAX_SEALED_LEN as u64 + 1;
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(io_at(&path))?;
        if bytes.len() > MAX_SEALED_LEN {
            return Err(StoreError::Oversized {
                id: *id,
                len: bytes.len() as u64,
            });
        }
        self.with_bound(|lru| lru.touch(id));
        Ok(bytes)
    }

    /// Every chunk in the store, with its size on disk.
    pub fn list(&self) -> Result<Vec<(ChunkId, u64)>, StoreError> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.dir).map_err(io_at(&self.dir))? {
            let shard = shard.map_err(io_at(&self.dir))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(io_at(&shard))? {
                let entry = entry.map_err(io_at(&shard))?;
                let name = entry.file_name();
                if let Some(id) = name.to_str().and_then(ChunkId::from_hex) {
                    let len = entry.metadata().map_err(io_at(&shard))?.len();
                    out.push((id, len));
                }
            }
        }
        Ok(out)
    }

    /// Deletes every chunk not in `referenced` written at least `min_age` ago (a chunk
    /// another store just copied here may be referenced by nothing this store knows
    /// of yet), and temporary files a crashed write left behind.
    pub fn gc(
        &self,
        referenced: &HashSet<ChunkId>,
        min_age: std::time::Duration,
    ) -> Result<GcStats, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut stats = GcStats::default();
        for (id, len) in self.list()? {
            let path = self.path(&id);
            let young = !min_age.is_zero()
                && fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().map_or(true, |age| age < min_age));
            if referenced.contains(&id) || young {
                stats.kept_chunks += 1;
                continue;
            }
            fs::remove_file(&path).map_err(io_at(&path))?;
            self.with_bound(|lru| lru.forget(&id));
            stats.removed_chunks += 1;
            stats.removed_bytes += len;
        }
        self.remove_stale_temporaries()?;
        Ok(stats)
    }

    /// Called with the lock held: no write of this process is in flight.
    fn remove_stale_temporaries(&self) -> Result<(), StoreError> {
        for shard in fs::read_dir(&self.dir).map_err(io_at(&self.dir))? {
            let shard = shard.map_err(io_at(&self.dir))?.path();
            let Ok(entries) = fs::read_dir(&shard) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}
