//! Worker side of the data plane: sandboxes on one host (host start-up, code supply,
//! pool, jail, backends).
//!
//! A frontend (Invoke API, auth, registry) talks to this crate only through
//! [`Worker::invoke`], [`Worker::invoke_streaming`], [`Worker::metrics`], the plain types
//! in [`spec`] and a [`code::CodeSource`] the worker pulls code from: in the same
//! process (the embedded role) or across a link (`cluster::daemon`).

pub mod bench;
pub mod code;
pub mod fsinfo;
pub mod host;
pub mod jail;
pub mod logfile;
pub mod metrics;
pub mod pool;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod spec;

pub use pool::{CodeSupply, PoolLoad, Worker, WorkerConfig};
pub use spec::{
    FunctionKey, FunctionVersionSpec, InvokeOutcome, InvokeRequest, InvokeResult, Report,
    SnapStartFailure, ThrottleReason, WorkerError, MAX_BUFFERED_RESPONSE_BYTES,
};
