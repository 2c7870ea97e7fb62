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
}

impl FunctionRecord {
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
    }
}
