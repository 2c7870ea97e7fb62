//! Errors of the hybrid-vsock client.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("CONNECT handshake on {path}: {source}")]
    Handshake { path: PathBuf, source: io::Error },
    #[error("unexpected reply to CONNECT {port}: {reply:?}")]
    BadReply { port: u32, reply: String },
    #[error("the VMM closed the stream: nothing listens on guest port {port} (yet)")]
    NotListening { port: u32 },
    #[error("guest port {port} not reachable within {waited:?}: {last}")]
    Timeout {
        port: u32,
        waited: Duration,
        last: Box<Error>,
    },
    #[error("listening on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("accept on {path}: {source}")]
    Accept { path: PathBuf, source: io::Error },
    #[error("no guest connection on {path} within {waited:?}")]
    AcceptTimeout { path: PathBuf, waited: Duration },
}

impl Error {
    /// Whether waiting and trying again can help (the guest or VMM is not up yet).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::NotListening { .. } => true,
            Error::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::WouldBlock
            ),
            Error::Handshake { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}
