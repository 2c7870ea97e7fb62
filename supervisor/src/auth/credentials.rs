//! The access key pair clients sign with: given by the operator, or
//! generated on first start and kept in the data dir with mode 0600.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::random_bytes;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path} is not valid TOML with access_key_id and secret_access_key: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("writing credentials file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

const FILE_NAME: &str = "credentials.toml";
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Credentials {
    pub fn new(access_key_id: String, secret_access_key: String) -> Result<Self, CredentialsError> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if access_key_id.is_empty() || !printable(&access_key_id) || access_key_id.contains('/') {
            return Err(CredentialsError::Invalid(
                "access key id must be non-empty printable ASCII without '/'",
            ));
        }
        if secret_access_key.is_empty() || !printable(&secret_access_key) {
            return Err(CredentialsError::Invalid(
                "secret access key must be non-empty printable ASCII",
            ));
        }
        Ok(Self {
            access_key_id,
            secret_access_key,
        })
    }

    /// A fresh pair shaped like AWS keys (`AKIA` + 16 base32, 40-char secret).
    pub fn generate() -> Self {
        let id: String = random_bytes::<16>()
            .iter()
            .map(|b| char::from(BASE32[usize::from(b % 32)]))
            .collect();
        let secret: String = random_bytes::<40>()
            .iter()
            .map(|b| char::from(SECRET_ALPHABET[usize::from(b % 64)]))
            .collect();
        Self {
            access_key_id: format!("AKIA{id}"),
            secret_access_key: secret,
        }
    }

    pub fn file_path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Loads the stored pair, or generates and stores one. Returns the pair
    /// and, when it was just created, the file it was written to.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Self, Option<PathBuf>), CredentialsError> {
        let path = Self::file_path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let c: Credentials =
                    toml::from_str(&text).map_err(|source| CredentialsError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                Ok((Self::new(c.access_key_id, c.secret_access_key)?, None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let c = Self::generate();
                c.write_new(&path)?;
                Ok((c, Some(path)))
            }
            Err(source) => Err(CredentialsError::Read { path, source }),
        }
    }

    fn write_new(&self, path: &Path) -> Result<(), CredentialsError> {
        let err = |source| CredentialsError::Write {
            path: path.to_owned(),
            source,
        };
        let text =
            toml::to_string(self).map_err(|_| CredentialsError::Invalid("unserialisable"))?;
        // create_new + 0600 at open time: the secret is never world-readable,
        // not even briefly.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_once_then_reloaded_with_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, created) = Credentials::load_or_generate(dir.path()).expect("generate");
        let path = created.expect("created on first start");
        assert!(a.access_key_id.starts_with("AKIA") && a.access_key_id.len() == 20);
        assert_eq!(a.secret_access_key.len(), 40);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = Credentials::load_or_generate(dir.path()).expect("reload");
        assert!(created.is_none());
        assert_eq!(a, b);
        assert!(!format!("{a:?}").contains(&a.secret_access_key));
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(Credentials::file_path(dir.path()), "nonsense = [").expect("write");
        assert!(matches!(
            Credentials::load_or_generate(dir.path()),
            Err(CredentialsError::Parse { .. })
        ));
    }
}
