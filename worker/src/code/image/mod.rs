//! Container-image functions on the worker. The frontend hands out an image as one
//! [`ImagePackage`] (its chunk manifest and what the image says to run), fetched and
//! digest-checked like a .zip package; the worker writes the image from its chunks,
//! a worker host copying those it lacks as it goes ([`CopyingSource`]), and mounts it
//! read-only ([`mount::MountedImage`]) as the root of the image's process sandboxes, or
//! serves its chunks to a microVM's monitor, which reads the image lazily
//! ([`lazy::LazyImage`]).

mod copy;
pub mod lazy;
pub mod loopdev;
pub mod mount;

pub use copy::{ChunkFetch, CopyingSource};
pub use lazy::{LazyImage, RemoteChunks};

use chunkstore::{ImageManifest, ManifestError, ReadError};
use serde::{Deserialize, Serialize};

/// First bytes of an encoded [`ImagePackage`].
const MAGIC: &[u8; 8] = b"LIMAGE1\n";
/// Bound on the run configuration's JSON (the image config blob itself is ≤ 1 MiB).
const MAX_RUN_BYTES: usize = 1 << 20;

/// What the image's config says to run (the parts a function uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRun {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    /// `KEY=value` entries, in the image's order.
    pub env: Vec<String>,
    /// The pinned image the package was made from (`registry/repo@sha256:...`).
    pub image: String,
}

/// A function's `ImageConfig`: each part given replaces the image's own. Serialized with
/// Lambda's field names: the API, the registry and the link carry this one type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

/// The program, directory and environment a sandbox of the image starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommand {
    pub argv: Vec<String>,
    pub working_dir: String,
    pub env: Vec<(String, String)>,
    /// What Lambda puts in `_HANDLER` for an image: the first word of the command.
    pub handler: String,
}

impl ImageRun {
    /// ENTRYPOINT then CMD, each replaced by the function's override when it has one;
    /// the working directory likewise, `/` when neither says.
    pub fn command(&self, overrides: &ImageOverrides) -> ImageCommand {
        let entrypoint = overrides.entry_point.as_ref().unwrap_or(&self.entrypoint);
        let cmd = overrides.command.as_ref().unwrap_or(&self.cmd);
        let working_dir = overrides
            .working_directory
            .clone()
            .or_else(|| self.working_dir.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let env = self
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        ImageCommand {
            argv: entrypoint.iter().chain(cmd).cloned().collect(),
            working_dir,
            env,
            handler: cmd.first().cloned().unwrap_or_default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image package: {0}")]
    Package(&'static str),
    #[error("image package run configuration: {0}")]
    Run(#[from] serde_json::Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A chunk missing, unreadable, or failing authentication: never wrong bytes.
    #[error("image chunk: {0}")]
    Read(#[from] ReadError),
    #[error("image {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl ImageError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Read(e) => e.is_transient(),
            Self::Io { .. } => true,
            Self::Package(_) | Self::Run(_) | Self::Manifest(_) => false,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// An image as function code: its chunks and what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePackage {
    pub run: ImageRun,
    pub manifest: ImageManifest,
}

impl ImagePackage {
    /// `MAGIC`, the run configuration's length (u32 LE) and JSON, then the manifest.
    /// The result holds chunk keys: the frontend seals it like any package.
    pub fn encode(&self) -> Vec<u8> {
        let run = serde_json::to_vec(&self.run).unwrap_or_default();
        let manifest = self.manifest.encode();
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + run.len() + manifest.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&u32::try_from(run.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&run);
        out.extend_from_slice(&manifest);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ImageError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(ImageError::Package("not an image package"))?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(ImageError::Package("truncated"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_RUN_BYTES || len > rest.len() {
            return Err(ImageError::Package(
                "run configuration length out of bounds",
            ));
        }
        let (run, manifest) = rest.split_at(len);
        Ok(Self {
            run: serde_json::from_slice(run)?,
            manifest: ImageManifest::decode(manifest)?,
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lazy_tests;
