//! The supervisor: Lambda-compatible control plane (function API, SigV4,
//! encrypted code store, durable registry) and the shared HTTP server the
//! invoke path plugs into.

pub mod auth;
pub mod codestore;
pub mod config;
pub mod control;
mod datadir_lock;
pub mod http;
pub mod ids;
mod prepare;
pub mod registry;
mod supervisor;
pub mod timefmt;

pub use datadir_lock::LockError;
pub use prepare::{PrepareError, PreparedCode};
pub use supervisor::{StartupReport, Supervisor, SupervisorError};
