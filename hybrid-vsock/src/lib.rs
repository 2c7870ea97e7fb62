//! Host side of Firecracker-style hybrid vsock: CONNECT handshake client and `<uds>_<port>` listeners.
//!
//! A VMM exposing a guest's vsock device this way listens on one Unix socket, `uds`:
//! - host-initiated: connect to `uds`, write `CONNECT <port>\n`, read `OK <host port>\n`,
//!   then the stream carries raw bytes to and from the guest's listener on `<port>`;
//! - guest-initiated: a guest connection to CID 2 port P is forwarded to the Unix
//!   socket `<uds>_P`, which the host must be listening on.
//!
//! Both our own VMM and `vhost-device-vsock` implement this. Until the guest listens,
//! they close the stream right after the CONNECT line; [`connect`] retries then.

mod client;
mod error;
mod listener;

pub use client::{connect, connect_once, HybridStream, RETRY_INTERVAL};
pub use error::Error;
pub use listener::{listen, listen_replacing, listener_path, HybridListener};
