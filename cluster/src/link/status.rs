//! What a worker tells frontends about itself (`GET /v1/status`): identity and
//! incarnation, lease, capacity, and its sandboxes per function version. Frontends
//! poll it; it is the heartbeat too.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerStatus {
    pub id: String,
    /// New on every (re)start and after every lease renewal: idle sandboxes are stopped
    /// at the end of a lease, so a new incarnation starts with none.
    pub incarnation: String,
    pub lease_remaining_ms: u64,
    /// At the end of its lease: takes no new invokes.
    pub draining: bool,
    /// Memory for sandboxes.
    pub capacity_mib: u64,
    pub cpus: u32,
    pub in_flight: u64,
    pub pools: Vec<PoolStatus>,
    pub code_cache: CodeCacheStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolStatus {
    pub function: String,
    pub version: String,
    pub revision: String,
    pub idle: u32,
    pub busy: u32,
    /// Milliseconds since the most recently used idle sandbox was last used.
    pub idle_for_ms: Option<u64>,
    /// Memory of each of the version's sandboxes; 0 from a worker that does not say.
    #[serde(default)]
    pub memory_mib: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeCacheStatus {
    pub hits: u64,
    pub fetches: u64,
    pub bytes: u64,
}

/// `function\0version\0revision`: a version key no name can forge (names have no NUL).
pub fn version_key(function: &str, version: &str, revision: &str) -> String {
    format!("{function}\0{version}\0{revision}")
}

impl PoolStatus {
    pub fn version_key(&self) -> String {
        version_key(&self.function, &self.version, &self.revision)
    }
}
