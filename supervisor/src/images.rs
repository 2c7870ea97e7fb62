//! Container images as function code on the frontend: an image URI on a configured
//! registry is resolved to its linux/amd64 manifest, its layers pulled and flattened,
//! the root built into an ext4 image and cut into the chunk store. What the registry
//! keeps is an [`ImagePackage`] (the chunk manifest and what the image runs), sealed by
//! the code store like a .zip; the plaintext tree and image are removed as soon as the
//! chunks are written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chunkstore::{ChunkStore, Salt, StoreError, WriteError, WriteStats};
use oci_image::ext4::Ext4Error;
use oci_image::{FlattenError, PullError, Puller, Registry};
use worker::code::image::{ImagePackage, ImageRun};
use worker::sandbox::dir_guard::DirGuard;

use crate::codestore::master_key::MasterKey;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("building the image's file system: {0}")]
    Ext4(#[from] Ext4Error),
    #[error("storing the image's chunks: {0}")]
    Chunks(#[from] WriteError),
    #[error("image work directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ImportError {
    /// Whether the client's input is at fault (an InvalidParameterValueException);
    /// otherwise this host failed (a ServiceException).
    pub fn is_client_error(&self) -> bool {
        match self {
            // Writing the tree fails for the layer's reasons (a name too long, ...)
            // except when this host's disk does.
            Self::Pull(PullError::Flatten(FlattenError::Io { source, .. })) => !matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC | libc::EDQUOT | libc::EIO | libc::EROFS)
            ),
            Self::Pull(PullError::Client(_)) => false,
            Self::Pull(e) => !e.is_transient(),
            Self::Chunks(WriteError::TooLarge { .. }) => true,
            Self::Ext4(_) | Self::Chunks(_) | Self::Io { .. } => false,
        }
    }
}

/// A pulled and stored image.
pub struct Imported {
    /// The encoded [`ImagePackage`]: holds chunk keys, so only ever stored sealed.
    pub package: Vec<u8>,
    pub pinned_uri: String,
    pub stats: WriteStats,
    /// Keep until the version naming the package is registered.
    pub hold: ChunkHold,
}

/// Keeps a garbage collection of the chunk store from starting while an import's
/// chunks are referenced by no registered version yet.
pub struct ChunkHold(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>);

pub struct Images {
    chunks: Arc<ChunkStore>,
    salt: Salt,
    registries: Vec<Registry>,
    /// Built at the first import: a host that never pulls (an appliance without
    /// registries, which has no CA certificates either) never needs an HTTP client.
    puller: std::sync::Mutex<Option<Arc<Puller>>>,
    work: PathBuf,
    /// Imports hold it shared ([`ChunkHold`]), a collection exclusively.
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl Images {
    /// The chunk store under `data_dir/chunks`; its salt is derived from the master key,
    /// so it is as secret as the key and never stored.
    pub fn open(
        data_dir: &Path,
        master: &MasterKey,
        registries: Vec<Registry>,
    ) -> Result<Self, StoreError> {
        let salt = Salt::from_bytes(*master.derive(b"lambda chunk-store salt v1"));
        let work = data_dir.join("image-work");
        // An import a crash interrupted left plaintext here.
        let _ = std::fs::remove_dir_all(&work);
        Ok(Self {
            chunks: Arc::new(ChunkStore::open(data_dir.join("chunks"))?),
            salt,
            registries,
            puller: std::sync::Mutex::new(None),
            work,
            gate: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    fn puller(&self) -> Result<Arc<Puller>, PullError> {
        let mut slot = self.puller.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let limits = oci_image::pull::PullLimits::default();
        let p = Arc::new(Puller::new(self.registries.clone(), limits)?);
        *slot = Some(p.clone());
        Ok(p)
    }

    pub fn chunks(&self) -> Arc<ChunkStore> {
        self.chunks.clone()
    }

    /// Pulls `uri`, flattens it, builds its ext4 image and stores its chunks.
    pub async fn import(&self, uri: &str) -> Result<Imported, ImportError> {
        let hold = ChunkHold(self.gate.clone().read_owned().await);
        let puller = self.puller()?;
        let resolved = puller.resolve(uri).await?;
        // Removed however the import ends.
        let dir = DirGuard(self.work.join(crate::ids::uuid_v4()));
        let io = |source| ImportError::Io {
            path: dir.0.clone(),
            source,
        };
        std::fs::create_dir_all(&dir.0).map_err(io)?;
        let root = dir.0.join("root");
        puller
            .pull_into(&resolved, &dir.0.join("blobs"), &root)
            .await?;
        let (chunks, salt, at) = (self.chunks.clone(), self.salt.clone(), dir.0.clone());
        let (manifest, stats) = tokio::task::spawn_blocking(move || {
            let image = at.join("image.ext4");
            oci_image::ext4::build(&at.join("root"), &image)?;
            let _ = std::fs::remove_dir_all(at.join("root"));
            let file = std::fs::File::open(&image).map_err(|source| ImportError::Io {
                path: image.clone(),
                source,
            })?;
            Ok::<_, ImportError>(chunkstore::write_image(
                &chunks,
                &salt,
                file,
                chunkstore::MAX_IMAGE_BYTES,
            )?)
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))??;
        let c = resolved.config;
        let run = ImageRun {
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            working_dir: c.working_dir,
            env: c.env,
            image: resolved.pinned_uri.clone(),
        };
        Ok(Imported {
            package: ImagePackage { run, manifest }.encode(),
            pinned_uri: resolved.pinned_uri,
            stats,
            hold,
        })
    }

    /// Waits until no import holds chunks that no version references yet, and keeps
    /// new imports from starting until the guard is dropped.
    pub async fn exclusive(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    /// Removes the chunks no package in `packages` references. The caller makes sure
    /// no import is in flight (at startup, or under [`Images::exclusive`]), so none of
    /// its chunks can be taken for garbage.
    /// Chunks written less than `min_age` ago are kept too.
    pub fn collect_garbage(
        &self,
        packages: &[Vec<u8>],
        min_age: std::time::Duration,
    ) -> Result<chunkstore::GcStats, StoreError> {
        let mut live = HashSet::new();
        for p in packages {
            match ImagePackage::decode(p) {
                Ok(p) => live.extend(p.manifest.stored_ids()),
                // An unreadable package references chunks we cannot name: keep all.
                Err(_) => return Ok(chunkstore::GcStats::default()),
            }
        }
        self.chunks.gc(&live, min_age)
    }
}
