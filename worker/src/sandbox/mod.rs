//! The sandbox abstraction: one isolated runtime serving one invoke at a time, with
//! backends `process` (jailed guest-init on the host) and `microvm`.

pub mod dir_guard;
pub mod launcher;
pub(crate) mod lean_stream;
pub mod log_tail;
pub mod microvm;
pub mod process;
pub mod rootfs;
pub mod select;
pub mod session;
mod stderr_tail;
mod streamed;
pub mod wire;

use crate::spec::{ChunkSink, FunctionVersionSpec, InvokeRequest};
pub use log_tail::LogSink;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One line of function output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub request_id: Option<String>,
    pub text: String,
}

/// What a runtime answered to an invoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Response(Vec<u8>),
    /// A streamed response, complete: its bytes went to the chunk sink as they came
    /// ([`Sandbox::invoke_streaming`]).
    Streamed,
    /// The runtime reported an error (`/invocation/{id}/error` or guest-init's own).
    Error {
        error_type: String,
        body: Vec<u8>,
    },
}

/// Failures of a sandbox. After any of them but `Rejected` the sandbox is destroyed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start sandbox: {0}")]
    Start(String),
    #[error("init failed: {error_type}")]
    Init { error_type: String, body: Vec<u8> },
    /// A sandbox resumed from a snapshot: its runtime's after-restore hooks failed, or
    /// it exited while restoring.
    #[error("restore failed: {error_type}")]
    Restore { error_type: String, body: Vec<u8> },
    /// The runtime process ended (`Runtime.ExitError` / `Runtime.OutOfMemory`).
    #[error("runtime exited: {message}")]
    Exited { error_type: String, message: String },
    #[error("sandbox protocol error: {0}")]
    Protocol(String),
}

/// The Init a SnapStart snapshot was taken after, for the cold start that waited for
/// it to log (Lambda logs it as `INIT_REPORT` with the Init's own output).
pub struct SnapshotInit {
    pub took: Duration,
    pub logs: Vec<LogLine>,
}

/// A started sandbox.
pub trait Sandbox: Send {
    /// Runs the init phase. The caller bounds it in time.
    fn init(&mut self) -> BoxFuture<'_, Result<(), SandboxError>>;
    /// Runs one invocation. The caller bounds it with the function timeout and destroys
    /// the sandbox when the bound is hit.
    fn invoke<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>>;
    /// Like `invoke`, but a streamed response goes to `chunks` as the runtime writes it
    /// and ends as [`Reply::Streamed`]; a buffered one still comes back whole. By
    /// default a sandbox cannot stream and answers as `invoke` does.
    fn invoke_streaming<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
        chunks: ChunkSink,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        drop(chunks);
        self.invoke(req, deadline_ms)
    }
    /// Function output goes to `sink` as it arrives (see [`log_tail`]); without one it
    /// is only kept for [`Sandbox::take_logs`].
    fn set_log_sink(&mut self, _sink: std::sync::Arc<dyn LogSink>) {}
    /// The last few KB of function output received since the last call.
    fn take_logs(&mut self) -> Vec<LogLine>;
    /// Peak memory use so far, in bytes, when the backend can measure it.
    fn max_memory_bytes(&self) -> Option<u64>;
    /// Whether the kernel's OOM killer has acted in this sandbox.
    fn oom_killed(&self) -> bool;
    /// The last of what the sandbox printed on its console (a microVM's serial port),
    /// to explain a failed start; `None` where there is no console.
    fn console_tail(&self) -> Option<String> {
        None
    }
    /// How the start went, stage by stage, for the worker's log line.
    fn start_details(&self) -> Option<String> {
        None
    }
    /// Resumed from a SnapStart snapshot: its start was a restore, not an Init, and
    /// this is how long the guest took from Restore to ready (REPORT's Billed Restore
    /// Duration).
    fn resume_took(&self) -> Option<Duration> {
        None
    }
    /// Resumed from a SnapStart snapshot: its `init` is the restore.
    fn is_restored(&self) -> bool {
        false
    }
    /// Stops the sandbox and releases everything it holds.
    fn destroy(self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()>;
}

/// Creates sandboxes for function versions.
pub trait Backend: Send + Sync {
    /// Short name for logs and metrics (`process`, `microvm`).
    fn name(&self) -> &'static str;
    /// What a cold start of `spec` needs before its sandbox starts, outside the Init
    /// bound (as Lambda runs a SnapStart version's Init when it is published): a
    /// microVM backend takes (or opens) the version's snapshot. Returns the Init it ran
    /// for that, to be logged; failures are the backend's to log (the sandbox then
    /// boots as usual).
    fn prepare<'a>(
        &'a self,
        _spec: &'a FunctionVersionSpec,
    ) -> BoxFuture<'a, Option<SnapshotInit>> {
        Box::pin(async { None })
    }
    /// Starts a sandbox (without running init). `id` is unique per worker.
    fn create<'a>(
        &'a self,
        spec: &'a FunctionVersionSpec,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Sandbox>, SandboxError>>;
    /// A function, or one version of it, was deleted: drop what the backend keeps for
    /// it beyond its sandboxes (a microVM backend's snapshots).
    fn forget(&self, _name: &str, _version: Option<&str>) {}
    /// Whether the backend reads a container image lazily through its chunks
    /// ([`crate::spec::ImageAccess::Chunks`]) rather than from a mount on this host.
    fn reads_images_lazily(&self) -> bool {
        false
    }
}

/// Stops a jailed sandbox: asks guest-init to stop the runtime, waits up to
/// `grace + margin` for the jailed process, then drops it on a blocking thread (which
/// kills leftovers, reaps, and removes the cgroup and run dir).
pub(crate) async fn stop_jailed(
    session: &mut session::Session,
    mut proc: Option<crate::jail::JailedProcess>,
    grace: Duration,
    margin: Duration,
) {
    let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
    session.shutdown(grace_ms).await;
    if let Some(p) = proc.as_mut() {
        let _ = tokio::time::timeout(grace + margin, p.wait()).await;
    }
    let _ = tokio::task::spawn_blocking(move || drop(proc)).await;
}
