//! Worker side of the data plane: sandboxes on one host (pool, jail, backends).
//!
//! The frontend (Invoke API, auth, registry) talks to this crate only through
//! [`Worker::invoke`], [`Worker::invoke_streaming`], [`Worker::metrics`] and the plain
//! types in [`spec`], so the two can later run on different hosts.

pub mod bench;
pub mod code;
pub mod host;
pub mod jail;
pub mod logfile;
pub mod metrics;
pub mod pool;
pub mod report;
pub mod sandbox;
pub mod spec;

pub use pool::{CodeSupply, PoolLoad, Worker, WorkerConfig};
pub use spec::{
    FunctionKey, FunctionVersionSpec, InvokeOutcome, InvokeRequest, InvokeResult, Report,
    ThrottleReason, WorkerError, MAX_BUFFERED_RESPONSE_BYTES,
};
