//! What the registry stores for each function version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const LATEST: &str = "$LATEST";

/// One function version (`$LATEST` or a published number) with its
/// configuration and a reference to its sealed code object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    pub version: String,
    pub runtime: String,
    pub role: String,
    pub handler: Option<String>,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub environment: BTreeMap<String, String>,
    pub ephemeral_storage: u32,
    pub code_sha256: String,
    pub code_size: u64,
    pub code_object: String,
    pub last_modified: String,
    pub revision_id: String,
    /// Uncompressed size of the package (Lambda's 250 MB counts it with the layers).
    #[serde(default)]
    pub unzipped_size: u64,
    /// Layer versions merged into /opt, in order. Each holds its package's object, so
    /// the package outlives a deleted layer version while this version uses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRef>,
    /// A container-image function: its code object is an image package (chunk
    /// manifest and run configuration), and `runtime` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRecord>,
    /// `SnapStart.ApplyOn` is `PublishedVersions`: published versions start microVMs from
    /// a snapshot taken after their first Init.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snap_start: bool,
}

/// Where a container-image version came from and how it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `Code.ImageUri` as given.
    pub uri: String,
    /// Pinned to the manifest the tag named at create time (`registry/repo@sha256:...`).
    pub resolved_uri: String,
    /// The function's `ImageConfig`.
    pub config: crate::control::model::ImageConfig,
}

/// One layer version a function version uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub arn: String,
    pub layer: String,
    pub version: i64,
    pub code_sha256: String,
    pub code_size: u64,
    #[serde(default)]
    pub unzipped_size: u64,
    pub code_object: String,
}

impl FunctionRecord {
    /// `CodeSha256` as Lambda reports it: for a container image, the image manifest's
    /// digest (hex, as in `ResolvedImageUri`); for a .zip, the package's SHA-256.
    /// `code_sha256` itself stays the stored package's digest, which names its object.
    pub fn reported_code_sha256(&self) -> &str {
        self.image
            .as_ref()
            .and_then(|i| i.resolved_uri.rsplit_once("@sha256:"))
            .map_or(&self.code_sha256, |(_, hex)| hex)
    }

    /// Whether publishing `self` ($LATEST) would duplicate `published`:
    /// Lambda returns the existing version instead of minting a new one.
    pub fn same_content_as(&self, published: &FunctionRecord) -> bool {
        self.runtime == published.runtime
            && self.role == published.role
            && self.handler == published.handler
            && self.timeout == published.timeout
            && self.memory_size == published.memory_size
            && self.environment == published.environment
            && self.ephemeral_storage == published.ephemeral_storage
            && self.code_sha256 == published.code_sha256
            && self.layers == published.layers
            && self.image == published.image
            && self.snap_start == published.snap_start
    }

    /// Whether sandboxes of this version start from a snapshot: SnapStart applies to
    /// published versions only, as on Lambda.
    pub fn snap_start_applies(&self) -> bool {
        self.snap_start && self.version != LATEST
    }

    /// The package and its layers, uncompressed.
    pub fn unzipped_total(&self) -> u64 {
        self.unzipped_size + self.layers.iter().map(|l| l.unzipped_size).sum::<u64>()
    }
}
