//! The worker's interface types: what the frontend hands the worker for one invoke and
//! what it gets back. Plain data, so a later issue can carry them across hosts.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the worker needs to run one version of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionVersionSpec {
    pub name: String,
    /// `$LATEST` or a published version number.
    pub version: String,
    /// Unpacked code (process backend; bound read-only at `/var/task`).
    pub code_dir: Option<PathBuf>,
    /// ext4 image of the code (microVM backend; attached as a read-only drive).
    pub code_image: Option<PathBuf>,
    /// Lambda runtime identifier, e.g. `provided.al2023` or `python3.11`.
    pub runtime: String,
    pub handler: String,
    pub memory_mib: u32,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    /// Reserved concurrency; `Some(0)` disables the function.
    pub reserved_concurrency: Option<u32>,
    /// The package to pull and unpack per sandbox when neither `code_dir` nor
    /// `code_image` is given (a worker on another host).
    pub code: Option<crate::code::CodeRef>,
    /// Code and configuration revision of this version (the registry's RevisionId):
    /// a sandbox started for one revision never serves another. Empty when the caller
    /// does not track revisions.
    pub revision: String,
    /// Layers merged read-only into `/opt`.
    pub layers: Layers,
    /// A container-image function: `code` names its image package, and the image is
    /// the sandbox's root instead of a runtime's rootfs.
    pub image: Option<ImageSpec>,
    /// SnapStart: a backend that can (microVMs) starts this version's sandboxes from a
    /// snapshot taken once after its first Init.
    pub snap_start: bool,
}

/// How a container-image function runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// The function's `ImageConfig`.
    pub overrides: crate::code::image::ImageOverrides,
    /// Set by the worker once the image is ready for a sandbox.
    pub ready: Option<ReadyImage>,
}

/// An image made ready for one sandbox: what to start in it, and how the sandbox
/// reaches its file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyImage {
    pub command: crate::code::image::ImageCommand,
    pub access: ImageAccess,
}

#[derive(Debug, Clone)]
pub enum ImageAccess {
    /// Mounted read-only on this host: the root of a process sandbox.
    Mounted(PathBuf),
    /// Served chunk by chunk to a microVM's monitor, which reads the image lazily.
    Chunks(std::sync::Arc<crate::code::image::LazyImage>),
}

impl PartialEq for ImageAccess {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Mounted(a), Self::Mounted(b)) => a == b,
            (Self::Chunks(a), Self::Chunks(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ImageAccess {}

impl ImageSpec {
    /// This spec with the image mounted at `dir` (from [`crate::code::unpack::Unpacker::image_for_sandbox`]).
    pub fn mounted_at(&self, dir: &crate::code::unpack::CodeDir) -> Self {
        let ready = dir.image().map(|m| ReadyImage {
            command: m.package.run.command(&self.overrides),
            access: ImageAccess::Mounted(m.root().to_owned()),
        });
        Self {
            overrides: self.overrides.clone(),
            ready,
        }
    }

    /// This spec with the image served lazily from `image`.
    pub fn served_from(&self, image: std::sync::Arc<crate::code::image::LazyImage>) -> Self {
        Self {
            overrides: self.overrides.clone(),
            ready: Some(ReadyImage {
                command: image.package.run.command(&self.overrides),
                access: ImageAccess::Chunks(image),
            }),
        }
    }
}

/// A function's layers, in the order Lambda merges them (a later layer's file wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    /// The packages to pull, by digest.
    pub packages: Vec<crate::code::CodeRef>,
    /// The merged tree, once unpacked for a sandbox.
    pub dir: Option<PathBuf>,
}

/// Identifies a pool of sandboxes: sandboxes are never shared across this key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionKey {
    pub name: String,
    pub version: String,
    pub revision: String,
}

impl FunctionVersionSpec {
    pub fn key(&self) -> FunctionKey {
        FunctionKey {
            name: self.name.clone(),
            version: self.version.clone(),
            revision: self.revision.clone(),
        }
    }

    /// Lambda's limits on the fields the worker relies on.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(format!("invalid function name {:?}", self.name));
        }
        let version_ok = self.version == "$LATEST"
            || (!self.version.is_empty()
                && self.version.len() <= 16
                && self.version.bytes().all(|b| b.is_ascii_digit()));
        if !version_ok {
            return Err(format!("invalid version {:?}", self.version));
        }
        if !(128..=10240).contains(&self.memory_mib) {
            return Err(format!(
                "MemorySize {} outside 128..=10240",
                self.memory_mib
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(900) {
            return Err(format!("Timeout {:?} outside 1..=900 s", self.timeout));
        }
        Ok(())
    }
}

/// One invocation as the worker sees it (headers already parsed by the frontend).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvokeRequest {
    pub request_id: String,
    pub payload: Vec<u8>,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub trace_id: Option<String>,
}

/// Receives a streamed invocation's response bytes, in order, as the function writes
/// them ([`crate::Worker::invoke_streaming`]). Plain bytes over a bounded channel, so a
/// link between hosts can carry it later; a full channel holds the function's writes
/// back, as a slow reader does in Lambda.
pub type ChunkSink = tokio::sync::mpsc::Sender<Vec<u8>>;

/// Largest streamed response (shared with guest-init). Past it the invoke ends with
/// `Function.ResponseSizeTooLarge`.
pub const MAX_STREAMED_RESPONSE_BYTES: u64 = runtime_api::MAX_STREAMED_RESPONSE_BYTES as u64;

/// Largest buffered (synchronous) response, also for a streaming function invoked the
/// buffered way: Lambda's 6 MB.
pub const MAX_BUFFERED_RESPONSE_BYTES: u64 = runtime_api::MAX_RESPONSE_BYTES as u64;

/// What the function produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeResult {
    /// The payload; empty after [`crate::Worker::invoke_streaming`], which hands every
    /// byte to the sink instead.
    Success(Vec<u8>),
    /// Returned with HTTP 200 and `X-Amz-Function-Error: Unhandled`; `body` is Lambda's
    /// error JSON.
    FunctionError { error_type: String, body: Vec<u8> },
}

/// Figures of the REPORT line.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub duration: Duration,
    pub billed_ms: u64,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u64,
    /// Present on cold starts only.
    pub init_duration: Option<Duration>,
    /// The cold start resumed a SnapStart snapshot: REPORT says `Restore Duration`
    /// (`init_duration`) and `Billed Restore Duration` (this: the guest's part).
    pub billed_restore: Option<Duration>,
    /// `timeout` or `error` when the sandbox ended abnormally.
    pub status: Option<&'static str>,
    /// With `status` `error`: what failed (`Runtime.ExitError`, ...).
    pub error_type: Option<String>,
}

/// The result of one synchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeOutcome {
    pub request_id: String,
    pub executed_version: String,
    pub result: InvokeResult,
    /// This invocation's log text (START, function lines, END, REPORT), for
    /// `X-Amz-Log-Result`.
    pub logs: String,
    pub report: Report,
}

/// Why an invocation was refused before it ran (HTTP 429 `TooManyRequestsException`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    ReservedFunctionConcurrentInvocationLimitExceeded,
    ConcurrentInvocationLimitExceeded,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
            Self::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
        }
    }

    /// Lambda's message for the 429 body (the same for both reasons).
    pub fn message(self) -> &'static str {
        "Rate Exceeded."
    }
}

/// Errors of the worker interface that are not function results.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("TooManyRequestsException: {}", .0.as_str())]
    Throttled(ThrottleReason),
    #[error("invalid function spec: {0}")]
    InvalidSpec(String),
    /// A sandbox could not be created (HTTP 500/502 `ServiceException`).
    #[error("sandbox unavailable: {0}")]
    Sandbox(crate::sandbox::SandboxError),
    /// The function's code could not be fetched or unpacked.
    #[error("function code: {0}")]
    Code(#[from] crate::code::CodeError),
    /// A SnapStart restore failed in the function's part of it.
    #[error("SnapStart restore: {0}")]
    SnapStart(SnapStartFailure),
}

/// A SnapStart restore whose runtime failed (Lambda's `SnapStartException`) or did not
/// get ready in time (`SnapStartTimeoutException`); the snapshot itself is sound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SnapStartFailure {
    #[error("the after-restore runtime hook failed ({error_type}: {message})")]
    Hook { error_type: String, message: String },
    #[error("the restore did not finish within {0:?}")]
    Timeout(Duration),
}

impl SnapStartFailure {
    /// A failed hook as the runtime reported it (`errorMessage` of its error document
    /// when it sent one).
    pub fn hook(error_type: String, body: &[u8]) -> Self {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned());
        Self::Hook {
            error_type,
            message,
        }
    }
}

impl WorkerError {
    /// Whether trying again later (or on another host) may succeed: a retry policy
    /// (asynchronous invokes) uses this.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Throttled(_) | Self::Sandbox(_) => true,
            Self::SnapStart(f) => matches!(f, SnapStartFailure::Timeout(_)),
            Self::InvalidSpec(_) => false,
            Self::Code(e) => e.is_transient(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn spec() -> FunctionVersionSpec {
        FunctionVersionSpec {
            name: "echo".into(),
            version: "$LATEST".into(),
            code_dir: None,
            code_image: None,
            code: None,
            runtime: "provided.al2023".into(),
            handler: "bootstrap".into(),
            memory_mib: 128,
            timeout: Duration::from_secs(3),
            env: vec![],
            reserved_concurrency: None,
            revision: String::new(),
            layers: Layers::default(),
            image: None,
            snap_start: false,
        }
    }

    #[test]
    fn validates_lambda_limits() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.name = "../etc".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.version = "1a".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.memory_mib = 64;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.timeout = Duration::from_secs(901);
        assert!(s.validate().is_err());
    }
}
