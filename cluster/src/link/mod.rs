//! The link between frontends and workers: HTTP/2 over mutually authenticated TLS
//! ([`crate::tls`]), one long-lived connection per frontend-worker pair carrying
//! invokes, streamed responses, logs (inside outcomes) and control messages, each on
//! its own stream with its own flow control.

pub mod body;
pub mod status;
pub mod transport;
pub mod wire;

/// A peer gets this long to finish its TLS handshake: a connection that stalls in it
/// holds nothing for longer.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Request paths on a worker.
pub const INVOKE_PATH: &str = "/v1/invoke";
pub const STATUS_PATH: &str = "/v1/status";
pub const FORGET_PATH: &str = "/v1/forget";
pub const METRICS_PATH: &str = "/metrics";
/// Request path prefix on a frontend: `/v1/code/<hex digest>`.
pub const CODE_PATH: &str = "/v1/code/";
