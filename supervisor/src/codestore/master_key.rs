//! The master key that wraps per-object data keys.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::ids::random_bytes;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("reading master key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing master key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("master key {0} must hold exactly 64 hex digits (a 256-bit key)")]
    Format(PathBuf),
    #[error("master key {path} is readable by group/other (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
}

pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(Zeroizing::new(b))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key for one purpose (`label`), derived with HMAC-SHA256: as secret as this
    /// one, never stored, and revealing nothing of it or of other purposes' keys.
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&*self.0)
            .expect("HMAC takes any key length");
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// Loads an operator-supplied key file (64 hex digits, mode 0600/0400).
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        let read_err = |source| MasterKeyError::Read {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut *key)
            .map_err(|_| MasterKeyError::Format(path.to_owned()))?;
        Ok(Self(key))
    }

    /// Loads `path`, or creates it with a fresh random key (mode 0600).
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), MasterKeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let write_err = |source| MasterKeyError::Write {
            path: path.to_owned(),
            source,
        };
        let key = Self::from_bytes(random_bytes::<32>());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.bytes())));
        f.write_all(text.as_bytes()).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        super::atomic::sync_parent(path).map_err(write_err)?;
        Ok((key, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_same_key_0600() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("master.key");
        let (a, created) = MasterKey::load_or_generate(&p).expect("gen");
        assert!(created);
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let (b, created) = MasterKey::load_or_generate(&p).expect("load");
        assert!(!created);
        assert_eq!(a.bytes(), b.bytes());
    }

    #[test]
    fn rejects_bad_format_and_loose_permissions() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("k");
        std::fs::write(&p, "abcd").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            MasterKey::load(&p),
            Err(MasterKeyError::Format(_))
        ));
        std::fs::write(&p, "00".repeat(32)).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            MasterKey::load(&p),
            Err(MasterKeyError::Permissions { .. })
        ));
    }
}
