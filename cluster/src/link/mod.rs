//! The link between frontends and workers: HTTP/2 over mutually authenticated TLS
//! ([`crate::tls`]), one long-lived connection per frontend-worker pair carrying
//! invokes, streamed responses, logs (inside outcomes) and control messages, each on
//! its own stream with its own flow control.

pub mod body;
pub mod client;
pub mod status;
pub mod transport;
pub mod wire;

/// A peer gets this long to finish its TLS handshake: a connection that stalls in it
/// holds nothing for longer.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Handshakes in progress at once on a listener; beyond it new connections are closed
/// at once, so unauthenticated peers cannot hold every descriptor.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Accepts the next connection; a failed accept (e.g. out of descriptors) waits a
/// little instead of spinning.
pub async fn accept_tcp(listener: &tokio::net::TcpListener) -> Option<tokio::net::TcpStream> {
    match listener.accept().await {
        Ok((tcp, _)) => {
            let _ = tcp.set_nodelay(true);
            Some(tcp)
        }
        Err(e) => {
            tracing::warn!(error = %e, "accepting a link connection");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            None
        }
    }
}

/// Request paths on a worker.
pub const INVOKE_PATH: &str = "/v1/invoke";
pub const STATUS_PATH: &str = "/v1/status";
pub const FORGET_PATH: &str = "/v1/forget";
pub const METRICS_PATH: &str = "/metrics";
/// Request path prefix on a frontend: `/v1/code/<hex digest>`.
pub const CODE_PATH: &str = "/v1/code/";
/// Request path prefix on a frontend: `/v1/chunk/<hex chunk id>` (a container image's
/// chunk, sealed as stored).
pub const CHUNK_PATH: &str = "/v1/chunk/";
