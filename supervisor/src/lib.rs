//! The supervisor: Lambda-compatible control plane (function API, SigV4,
//! encrypted code store, durable registry), the Invoke API front end, and the
//! wiring to the worker that runs sandboxes.

pub mod auth;
pub mod chunk_gc;
pub mod cluster_cli;
pub mod codestore;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod demo;
pub mod http;
pub mod ids;
pub mod images;
pub mod invoke;
pub mod migrate;
mod prepare;
pub mod registry;
pub mod serve;
pub mod shared;
mod supervisor;
pub mod timefmt;

pub use prepare::PrepareError;
pub use supervisor::{StartupReport, Supervisor, SupervisorError};
pub use worker::host::lock::LockError;
