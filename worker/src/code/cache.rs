//! Packages kept on the worker, sealed with AES-256-GCM under a key that lives only in
//! this process's memory (so nothing a previous run left can be opened, and files left
//! behind are removed at open), evicted least recently used beyond a size bound.

use super::{check_digest, digest_hex, CodeError, CodeRef, CodeSource};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sealing failed")]
    Seal,
    #[error("cached package {0} failed authentication")]
    Open(String),
    #[error("OS random number generator: {0}")]
    Random(String),
    #[error("cache task failed: {0}")]
    Task(String),
}

struct Entry {
    bytes: u64,
    last_use: u64,
}

struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

/// A sealed, size-bounded cache of packages in front of an upstream [`CodeSource`].
pub struct SealedCache {
    dir: PathBuf,
    max_bytes: u64,
    key: Aes256Gcm,
    upstream: Arc<dyn CodeSource>,
    index: Mutex<Index>,
    /// One fetch per digest at a time: a burst of cold starts of a new version waits for
    /// the first download instead of making its own.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hits: std::sync::atomic::AtomicU64,
    fetches: std::sync::atomic::AtomicU64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

fn random<const N: usize>() -> Result<[u8; N], CacheError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| CacheError::Random(e.to_string()))?;
    Ok(b)
}

impl SealedCache {
    /// Opens `dir` (0700), removing whatever an earlier process left there.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        upstream: Arc<dyn CodeSource>,
    ) -> Result<Self, CacheError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let key = random::<32>()?;
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            key: Aes256Gcm::new(&key.into()),
            upstream,
            index: Mutex::new(Index {
                entries: HashMap::new(),
                total: 0,
                clock: 0,
            }),
            fetching: Mutex::new(HashMap::new()),
            hits: 0.into(),
            fetches: 0.into(),
        })
    }

    /// (cache hits, fetches from upstream) so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.fetches.load(Relaxed))
    }

    /// Bytes of sealed packages held.
    pub fn held_bytes(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.sealed"))
    }

    /// The cached package, if held (and still authentic).
    fn read(&self, code: &CodeRef, hex: &str) -> Result<Option<Vec<u8>>, CodeError> {
        {
            let mut ix = self.lock();
            ix.clock += 1;
            let now = ix.clock;
            match ix.entries.get_mut(hex) {
                Some(e) => e.last_use = now,
                None => return Ok(None),
            }
        }
        let path = self.path(hex);
        let sealed = std::fs::read(&path).map_err(io(&path))?;
        if sealed.len() < NONCE_LEN {
            return Err(CacheError::Open(hex.to_owned()).into());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let zip = self
            .key
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: hex.as_bytes(),
                },
            )
            .map_err(|_| CacheError::Open(hex.to_owned()))?;
        check_digest(code, &zip)?;
        Ok(Some(zip))
    }

    fn write(&self, hex: &str, zip: &[u8]) -> Result<(), CacheError> {
        let nonce = random::<NONCE_LEN>()?;
        let body = self
            .key
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: zip,
                    aad: hex.as_bytes(),
                },
            )
            .map_err(|_| CacheError::Seal)?;
        let path = self.path(hex);
        let tmp = self
            .dir
            .join(format!(".tmp-{hex}-{}", u64::from_le_bytes(random::<8>()?)));
        let mut data = Vec::with_capacity(NONCE_LEN + body.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&body);
        std::fs::write(&tmp, &data)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io(&path)(e)
            })?;
        let evicted = {
            let mut ix = self.lock();
            ix.clock += 1;
            let last_use = ix.clock;
            let bytes = data.len() as u64;
            if let Some(old) = ix.entries.insert(hex.to_owned(), Entry { bytes, last_use }) {
                ix.total -= old.bytes;
            }
            ix.total += bytes;
            evict(&mut ix, self.max_bytes, hex)
        };
        for h in evicted {
            let _ = std::fs::remove_file(self.path(&h));
        }
        Ok(())
    }

    /// The package, from the cache or else from upstream (then cached). Blocking file
    /// I/O runs on the blocking pool.
    pub async fn get(self: &Arc<Self>, code: &CodeRef) -> Result<Vec<u8>, CodeError> {
        use std::sync::atomic::Ordering::Relaxed;
        let hex = digest_hex(&code.sha256)?;
        if let Some(zip) = self.cached(code, &hex).await? {
            return Ok(zip);
        }
        let gate = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hex.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        // Another caller may have fetched it while this one waited.
        if let Some(zip) = self.cached(code, &hex).await? {
            return Ok(zip);
        }
        let fetched = self.fetch_and_keep(code, hex.clone()).await;
        self.fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hex);
        let zip = fetched?;
        self.fetches.fetch_add(1, Relaxed);
        Ok(zip)
    }

    /// A cached copy, counted as a hit. A damaged or foreign file is not trusted: `None`.
    async fn cached(
        self: &Arc<Self>,
        code: &CodeRef,
        hex: &str,
    ) -> Result<Option<Vec<u8>>, CodeError> {
        let (me, c, h) = (self.clone(), code.clone(), hex.to_owned());
        let found = tokio::task::spawn_blocking(move || me.read(&c, &h))
            .await
            .map_err(task_failed)?;
        match found {
            Ok(Some(zip)) => {
                self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Some(zip))
            }
            _ => Ok(None),
        }
    }

    async fn fetch_and_keep(
        self: &Arc<Self>,
        code: &CodeRef,
        hex: String,
    ) -> Result<Vec<u8>, CodeError> {
        let zip = self.upstream.fetch(code).await?;
        check_digest(code, &zip)?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.write(&hex, &zip).map(|()| zip))
            .await
            .map_err(task_failed)?
            .map_err(CodeError::from)
    }
}

fn task_failed(e: tokio::task::JoinError) -> CodeError {
    CodeError::Cache(CacheError::Task(e.to_string()))
}

/// Drops least recently used entries (never `keep`) until `total <= max`; returns them.
fn evict(ix: &mut Index, max: u64, keep: &str) -> Vec<String> {
    let mut gone = Vec::new();
    while ix.total > max {
        let victim = ix
            .entries
            .iter()
            .filter(|(h, _)| h.as_str() != keep)
            .min_by_key(|(_, e)| e.last_use)
            .map(|(h, _)| h.clone());
        let Some(h) = victim else { break };
        if let Some(e) = ix.entries.remove(&h) {
            ix.total -= e.bytes;
        }
        gone.push(h);
    }
    gone
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
