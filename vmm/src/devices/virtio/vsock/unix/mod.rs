//! Host backend: Firecracker-compatible hybrid vsock over Unix sockets.

mod handshake;
mod muxer;

pub use handshake::{parse_connect_line, HandshakeError};
pub use muxer::{MuxerError, VsockMuxer};
