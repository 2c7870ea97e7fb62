//! Encrypted code store: validated zips sealed with AES-256-GCM, written
//! atomically, decrypted only when a sandbox is prepared (into a directory
//! or a read-only ext4 image, cached by CodeSha256).

pub mod atomic;
pub mod envelope;
pub mod ext4;
pub mod master_key;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};

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
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    #[error("code store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid code object id '{0}'")]
    BadObjectId(String),
    #[error("decrypted code does not match its recorded CodeSha256")]
    DigestMismatch,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CodeStoreError + '_ {
    move |source| CodeStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `CodeSha256` as Lambda reports it: base64 of the zip's SHA-256.
pub fn code_sha256(zip: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(zip))
}

/// File-system-safe form of a CodeSha256 (hex of the digest).
pub(crate) fn sha_dir_name(code_sha256: &str) -> Result<String, CodeStoreError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(code_sha256)
        .map_err(|_| CodeStoreError::DigestMismatch)?;
    if raw.len() != 32 {
        return Err(CodeStoreError::DigestMismatch);
    }
    Ok(hex::encode(raw))
}

pub struct CodeStore {
    objects: PathBuf,
    cache: PathBuf,
    master: MasterKey,
    limits: ZipLimits,
    /// One lock per CodeSha256 being materialised, so concurrent prepares of
    /// the same code wait for one build instead of racing.
    building: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl CodeStore {
    /// Opens (creating) `objects_dir` and `cache_dir` and clears leftovers of
    /// interrupted writes.
    pub fn open(
        objects_dir: &Path,
        cache_dir: &Path,
        master: MasterKey,
        limits: ZipLimits,
    ) -> Result<Self, CodeStoreError> {
        for d in [
            objects_dir.to_owned(),
            cache_dir.join("dirs"),
            cache_dir.join("images"),
        ] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
            atomic::remove_stale_temps(&d).map_err(io_err(&d))?;
        }
        std::fs::set_permissions(objects_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(objects_dir))?;
        Ok(Self {
            objects: objects_dir.to_owned(),
            cache: cache_dir.to_owned(),
            master,
            limits,
            building: Mutex::new(HashMap::new()),
        })
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
        Ok(id)
    }

    /// Decrypts an object and checks it against its CodeSha256.
    pub fn read(&self, object_id: &str, aad: &CodeAad<'_>) -> Result<Vec<u8>, CodeStoreError> {
        use std::io::Read as _;
        let path = self.object_path(object_id)?;
        let mut f = std::fs::File::open(&path).map_err(io_err(&path))?;
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

    fn build_lock(&self, key: &str) -> Arc<Mutex<()>> {
        let mut map = self.building.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned()).or_default().clone()
    }

    /// Removes cached plaintext (directories and images) whose digest (hex)
    /// is not in `keep`; returns how many entries were removed.
    pub fn prune_cache(
        &self,
        keep: &std::collections::HashSet<String>,
    ) -> Result<usize, CodeStoreError> {
        let mut removed = 0;
        for (kind, suffix) in [("dirs", ""), ("images", ".ext4")] {
            let dir = self.cache.join(kind);
            for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(hex) = name.strip_suffix(suffix) else {
                    continue;
                };
                if name.starts_with(atomic::TMP_PREFIX) || keep.contains(hex) {
                    continue;
                }
                let lock_key = format!("{}-{hex}", if kind == "dirs" { "dir" } else { "img" });
                let lock = self.build_lock(&lock_key);
                let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let path = entry.path();
                let result = if kind == "dirs" {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                result.map_err(io_err(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Decrypts and extracts the code into `cache/dirs/<sha>`; reuses an
    /// existing extraction of the same CodeSha256.
    pub fn materialize_dir(
        &self,
        object_id: &str,
        aad: &CodeAad<'_>,
    ) -> Result<PathBuf, CodeStoreError> {
        let name = sha_dir_name(aad.code_sha256)?;
        let dest = self.cache.join("dirs").join(&name);
        let lock = self.build_lock(&format!("dir-{name}"));
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        if dest.is_dir() {
            return Ok(dest);
        }
        let zip = self.read(object_id, aad)?;
        let plan = self.validate(&zip)?;
        let tmp =
            self.cache
                .join("dirs")
                .join(format!("{}{}", atomic::TMP_PREFIX, random_hex::<8>()));
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let built = extract::extract(&zip, &plan, &tmp)
            .map_err(CodeStoreError::from)
            .and_then(|()| std::fs::rename(&tmp, &dest).map_err(io_err(&dest)));
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(dest)
    }

    /// Builds (or reuses) a read-only ext4 image `cache/images/<sha>.ext4`.
    pub fn materialize_image(
        &self,
        object_id: &str,
        aad: &CodeAad<'_>,
    ) -> Result<PathBuf, CodeStoreError> {
        let name = sha_dir_name(aad.code_sha256)?;
        let dest = self.cache.join("images").join(format!("{name}.ext4"));
        let lock = self.build_lock(&format!("img-{name}"));
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        if dest.is_file() {
            return Ok(dest);
        }
        let zip = self.read(object_id, aad)?;
        let plan = self.validate(&zip)?;
        let images = self.cache.join("images");
        let stage = images.join(format!("{}{}", atomic::TMP_PREFIX, random_hex::<8>()));
        let tmp_img = images.join(format!("{}{}.ext4", atomic::TMP_PREFIX, random_hex::<8>()));
        let result = (|| {
            std::fs::create_dir(&stage).map_err(io_err(&stage))?;
            extract::extract(&zip, &plan, &stage)?;
            let entries = plan.entries.len() as u64;
            let size = ext4::image_size_bytes(plan.unzipped_size, entries);
            ext4::build_image(&stage, &tmp_img, size, entries)?;
            std::fs::set_permissions(&tmp_img, std::fs::Permissions::from_mode(0o444))
                .map_err(io_err(&tmp_img))?;
            std::fs::File::open(&tmp_img)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&tmp_img))?;
            std::fs::rename(&tmp_img, &dest).map_err(io_err(&dest))
        })();
        let _ = std::fs::remove_dir_all(&stage);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_img);
        }
        result.map(|()| dest)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
