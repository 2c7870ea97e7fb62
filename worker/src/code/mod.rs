//! Function code on the worker: the worker pulls a version's package (a zip) by its
//! digest from a [`CodeSource`] (the frontend's store, locally or over a link), keeps
//! it sealed in a [`cache::SealedCache`], and unpacks it into each sandbox's own
//! directory ([`unpack`]), removed with the sandbox. Plaintext code exists nowhere else.

pub mod cache;
pub mod image;
mod layers;
pub mod package;
pub mod template;
pub mod unpack;

use crate::sandbox::BoxFuture;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// A version's package as the worker is told of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CodeRef {
    /// `CodeSha256`: base64 of the zip's SHA-256, what Lambda reports.
    pub sha256: String,
    /// Where to pull it from (for a link: the frontend's link address). Opaque here.
    pub source: String,
}

/// Why code could not be had. [`CodeError::is_transient`] says whether another try
/// (later, or on another worker) may succeed.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("code source unreachable: {0}")]
    Unreachable(String),
    #[error("code source does not have {0}")]
    NotFound(String),
    #[error("code package larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("code package does not match its CodeSha256 {0}")]
    DigestMismatch(String),
    #[error("invalid CodeSha256 {0:?}")]
    BadDigest(String),
    #[error(transparent)]
    Package(#[from] package::ZipError),
    #[error(transparent)]
    Extract(#[from] package::ExtractError),
    #[error("code cache: {0}")]
    Cache(#[from] cache::CacheError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("code dir {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl CodeError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Cache(_) | Self::Io { .. } => true,
            Self::Extract(e) => e.is_host_failure(),
            Self::Image(e) => e.is_transient(),
            Self::NotFound(_)
            | Self::TooLarge { .. }
            | Self::DigestMismatch(_)
            | Self::BadDigest(_)
            | Self::Package(_) => false,
        }
    }
}

/// Where the worker pulls packages from.
pub trait CodeSource: Send + Sync {
    /// The package `code` names, its digest already checked.
    fn fetch<'a>(&'a self, code: &'a CodeRef) -> BoxFuture<'a, Result<Vec<u8>, CodeError>>;
}

/// `CodeSha256` of `zip`.
pub fn code_sha256(zip: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(zip))
}

/// The file-system-safe (hex) form of a `CodeSha256`.
pub fn digest_hex(code_sha256: &str) -> Result<String, CodeError> {
    let bad = || CodeError::BadDigest(code_sha256.to_owned());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(code_sha256)
        .map_err(|_| bad())?;
    if raw.len() != 32 {
        return Err(bad());
    }
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks `zip` against `code.sha256`.
pub fn check_digest(code: &CodeRef, zip: &[u8]) -> Result<(), CodeError> {
    if code_sha256(zip) == code.sha256 {
        Ok(())
    } else {
        Err(CodeError::DigestMismatch(code.sha256.clone()))
    }
}
