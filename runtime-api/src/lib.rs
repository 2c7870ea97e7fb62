//! Host-guest wire protocol and the Lambda Runtime API server.
//!
//! - [`protocol`]: the framed binary protocol between guest-init and the host
//!   (supervisor/worker). No async runtime needed; blocking std I/O.
//! - `server` (feature `server`): the Lambda Runtime API HTTP server guest-init runs
//!   on 127.0.0.1:9001 (hyper 1.x on a tokio current-thread runtime).

pub mod protocol;

#[cfg(feature = "server")]
pub mod server;
