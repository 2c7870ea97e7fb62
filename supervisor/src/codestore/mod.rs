//! Encrypted code store: validated zips sealed with AES-256-GCM, written
//! atomically, decrypted only when a worker pulls a package (which it unpacks into
//! each sandbox's own directory).

pub mod atomic;
pub mod envelope;
pub mod master_key;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub use envelope::CodeAad;
pub use master_key::MasterKey;
/// The package format lives with the worker, which unpacks code; uploads are checked
/// with the same code.
pub use worker::code::package::{central_dir, extract, zipcheck};
pub use zipcheck::{ZipError, ZipLimits, ZipPlan};

use crate::ids::random_hex;

#[derive(Debug, thiserror::Error)]
pub enum CodeStoreError {
    #[error(transparent)]
    Zip(#[from] ZipError),
    #[error(transparent)]
    Envelope(#[from] envelope::EnvelopeError),
    #[error("code store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid code object id '{0}'")]
    BadObjectId(String),
    #[error("decrypted code does not match its recorded CodeSha256")]
    DigestMismatch,
    /// Frontends sharing a registry (`--etcd`) hold copies of each object.
    #[error(transparent)]
    Peers(#[from] crate::shared::peer_code::PeerError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CodeStoreError + '_ {
    move |source| CodeStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `CodeSha256` as Lambda reports it (the worker checks packages with the same function).
pub use worker::code::code_sha256;

pub struct CodeStore {
    objects: PathBuf,
    master: MasterKey,
    limits: ZipLimits,
    /// Other frontends (`--etcd`): each new object is copied to them before it is
    /// acknowledged, and an object missing here is fetched from them.
    peers: Option<std::sync::Arc<crate::shared::peer_code::PeerCode>>,
}

impl CodeStore {
    /// Opens (creating) `objects_dir` and clears leftovers of interrupted writes.
    pub fn open(
        objects_dir: &Path,
        master: MasterKey,
        limits: ZipLimits,
    ) -> Result<Self, CodeStoreError> {
        std::fs::create_dir_all(objects_dir).map_err(io_err(objects_dir))?;
        atomic::remove_stale_temps(objects_dir).map_err(io_err(objects_dir))?;
        std::fs::set_permissions(objects_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(objects_dir))?;
        Ok(Self {
            objects: objects_dir.to_owned(),
            master,
            limits,
            peers: None,
        })
    }

    pub fn with_peers(mut self, peers: std::sync::Arc<crate::shared::peer_code::PeerCode>) -> Self {
        self.peers = Some(peers);
        self
    }

    pub fn limits(&self) -> &ZipLimits {
        &self.limits
    }

    pub fn validate(&self, zip: &[u8]) -> Result<ZipPlan, ZipError> {
        zipcheck::validate(zip, &self.limits)
    }

    fn object_path(&self, object_id: &str) -> Result<PathBuf, CodeStoreError> {
        let ok = object_id.len() == 32 && object_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(CodeStoreError::BadObjectId(object_id.to_owned()));
        }
        Ok(self.objects.join(format!("{object_id}.code")))
    }

    /// Seals `zip` (already validated) in place under `aad` and stores it
    /// durably; returns the new object id. The buffer is consumed: it holds
    /// ciphertext afterwards.
    pub fn put(&self, aad: &CodeAad<'_>, mut zip: Vec<u8>) -> Result<String, CodeStoreError> {
        let sealed = envelope::seal_in_place(&self.master, aad, &mut zip)?;
        let id = random_hex::<16>();
        let path = self.object_path(&id)?;
        atomic::write_atomic(&path, &[&sealed.header, &zip, &sealed.tag], 0o600)
            .map_err(io_err(&path))?;
        if let Some(peers) = &self.peers {
            let copy = [&sealed.header[..], &zip, &sealed.tag].concat();
            if let Err(e) = peers.push(&id, copy) {
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
        }
        Ok(id)
    }

    /// Stores an object another frontend sealed (`--etcd`); its envelope is checked
    /// when it is read.
    pub fn put_sealed(&self, object_id: &str, sealed: &[u8]) -> Result<(), CodeStoreError> {
        let path = self.object_path(object_id)?;
        if sealed.len() < envelope::OVERHEAD {
            return Err(envelope::EnvelopeError::Format.into());
        }
        atomic::write_atomic(&path, &[sealed], 0o600).map_err(io_err(&path))
    }

    /// An object as stored (sealed), for another frontend; `None` if this one lacks it.
    pub fn sealed(&self, object_id: &str) -> Result<Option<Vec<u8>>, CodeStoreError> {
        let path = self.object_path(object_id)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Opens an object, first fetching it from another frontend if this one lacks it.
    fn open_object(&self, path: &Path, object_id: &str) -> Result<std::fs::File, CodeStoreError> {
        match std::fs::File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let fetched = match &self.peers {
                    Some(peers) => peers.fetch(object_id)?,
                    None => None,
                };
                let Some(bytes) = fetched else {
                    return Err(io_err(path)(e));
                };
                self.put_sealed(object_id, &bytes)?;
                std::fs::File::open(path).map_err(io_err(path))
            }
            other => other.map_err(io_err(path)),
        }
    }

    /// Decrypts an object and checks it against its CodeSha256.
    pub fn read(&self, object_id: &str, aad: &CodeAad<'_>) -> Result<Vec<u8>, CodeStoreError> {
        use std::io::Read as _;
        let path = self.object_path(object_id)?;
        let mut f = self.open_object(&path, object_id)?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        let body_len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(envelope::OVERHEAD))
            .ok_or(envelope::EnvelopeError::Format)?;
        let mut header = [0u8; envelope::HEADER_LEN];
        f.read_exact(&mut header).map_err(io_err(&path))?;
        // Read body and tag straight into their final places: no copies.
        let mut zip = vec![0u8; body_len];
        f.read_exact(&mut zip).map_err(io_err(&path))?;
        let mut tag = [0u8; 16];
        f.read_exact(&mut tag).map_err(io_err(&path))?;
        let sealed = envelope::Sealed { header, tag };
        envelope::open_in_place(&self.master, aad, &sealed, &mut zip)?;
        if code_sha256(&zip) != aad.code_sha256 {
            return Err(CodeStoreError::DigestMismatch);
        }
        Ok(zip)
    }

    /// Re-seals an existing object under a new AAD (e.g. when `$LATEST` is
    /// published as a numbered version).
    pub fn copy(
        &self,
        object_id: &str,
        from: &CodeAad<'_>,
        to: &CodeAad<'_>,
    ) -> Result<String, CodeStoreError> {
        let zip = self.read(object_id, from)?;
        self.put(to, zip)
    }

    pub fn remove(&self, object_id: &str) -> Result<(), CodeStoreError> {
        let path = self.object_path(object_id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// How long ago an object was written; `None` if that cannot be told.
    pub fn age(&self, object_id: &str) -> Option<std::time::Duration> {
        let path = self.object_path(object_id).ok()?;
        std::fs::metadata(path)
            .ok()?
            .modified()
            .ok()?
            .elapsed()
            .ok()
    }

    /// Ids of every stored object (for garbage collection after a crash).
    pub fn object_ids(&self) -> Result<Vec<String>, CodeStoreError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.objects).map_err(io_err(&self.objects))? {
            let entry = entry.map_err(io_err(&self.objects))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".code") {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
