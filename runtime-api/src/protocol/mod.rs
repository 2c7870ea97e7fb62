//! The host-guest wire protocol: versioned, length-prefixed binary frames over a stream.
//!
//! See `docs/protocol.md` for the byte-level specification.

pub mod codec;
pub mod connection;
pub mod frame;
pub mod messages;

pub use codec::DecodeError;
pub use connection::{
    GuestConnection, GuestReceiver, GuestSender, HostConnection, HostReceiver, HostSender,
    Transport,
};
pub use frame::{decode, encode, read_frame, write_frame, WireError, MAX_BODY_LEN, VERSION};
pub use messages::*;

/// Default vsock port guest-init connects to on the host (CID 2); `gi.port=` overrides it.
pub const DEFAULT_VSOCK_PORT: u32 = 9000;
/// The host's vsock CID.
pub const HOST_CID: u32 = 2;
