//! What a snapshot was taken on: the vmm binary, kernel and rootfs image, by digest.
//! A snapshot resumes only on the very same files (a restored guest's page cache holds
//! pages of its rootfs, and its state the vmm's format).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files up to this size that no manifest lists count by their contents.
const HASHED_UP_TO: u64 = 64 << 20;

/// Identifies the files a guest was started from: an upgraded vmm, kernel or rootfs
/// makes older snapshots unusable. A file listed in its folder's `manifest.json` (the
/// image build writes one) counts by the SHA-256 there; any other by its own SHA-256
/// up to [`HASHED_UP_TO`] (the vmm binary), else by size and modification time (a
/// digest of a large image would cost a full read). Neither inode nor modification
/// time of a listed or small file is used: an appliance unpacks its files afresh at
/// each boot. `digests` caches the files hashed so far.
pub fn base_fingerprint(files: &[PathBuf], digests: &DigestCache) -> std::io::Result<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let mut h = sha2::Sha256::new();
    for f in files {
        let m = std::fs::metadata(f)?;
        h.update(f.as_os_str().as_bytes());
        h.update(m.len().to_le_bytes());
        if let Some(digest) = manifest_digest(f, m.len()) {
            h.update(digest.as_bytes());
        } else if m.len() <= HASHED_UP_TO {
            h.update(digests.of(f, &m)?);
        } else {
            h.update(m.mtime().to_le_bytes());
            h.update(m.mtime_nsec().to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A file as last seen: path, size, modification time (seconds, nanoseconds).
type FileId = (PathBuf, u64, i64, i64);

/// SHA-256 of files by path, size and modification time, so each is read once.
#[derive(Default)]
pub struct DigestCache(Mutex<HashMap<FileId, [u8; 32]>>);

impl DigestCache {
    fn of(&self, file: &Path, m: &std::fs::Metadata) -> std::io::Result<[u8; 32]> {
        use sha2::Digest;
        use std::os::unix::fs::MetadataExt;
        let id = (file.to_owned(), m.len(), m.mtime(), m.mtime_nsec());
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = cache.get(&id) {
            return Ok(*d);
        }
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut std::fs::File::open(file)?, &mut h)?;
        let digest: [u8; 32] = h.finalize().into();
        cache.insert(id, digest);
        Ok(digest)
    }
}

/// The SHA-256 the image build's `manifest.json` beside `file` gives for it, if it
/// lists it with this size.
fn manifest_digest(file: &Path, len: u64) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        images: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        file: String,
        size: u64,
        sha256: String,
    }
    const MAX_MANIFEST_BYTES: u64 = 1 << 20;
    let path = file.parent()?.join("manifest.json");
    if std::fs::metadata(&path).ok()?.len() > MAX_MANIFEST_BYTES {
        return None;
    }
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let name = file.file_name()?.to_str()?;
    manifest
        .images
        .into_iter()
        .find(|e| e.file == name && e.size == len)
        .map(|e| e.sha256)
}
