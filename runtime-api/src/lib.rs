//! Host-guest wire protocol and the Lambda Runtime API server.
//!
//! - [`protocol`]: the framed binary protocol between guest-init and the host
//!   (supervisor/worker). No async runtime needed; blocking std I/O.
//! - `server` (feature `server`): the Lambda Runtime API HTTP server guest-init runs
//!   on 127.0.0.1:9001 (hyper 1.x on a tokio current-thread runtime).

pub mod protocol;

/// Largest streamed response body: Lambda's documented default for response streaming
/// is 200 MB (raised from 20 MB in July 2025). guest-init cuts a longer stream off, and
/// the worker enforces the same bound on what it receives.
pub const MAX_STREAMED_RESPONSE_BYTES: usize = 200 * 1024 * 1024;

/// Largest buffered response (and error body): Lambda's 6 MB synchronous limit.
pub const MAX_RESPONSE_BYTES: usize = 6_291_556;

#[cfg(feature = "server")]
pub mod server;
