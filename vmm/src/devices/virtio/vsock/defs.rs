//! Device-wide constants and limits.

use std::time::Duration;

/// Virtio device ID of vsock.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// The host's CID, as seen by the guest.
pub const HOST_CID: u64 = 2;
/// Lowest CID a guest may have (0-2 are reserved).
pub const MIN_GUEST_CID: u64 = 3;

/// Queue indices.
pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
pub const EVQ: usize = 2;
pub const NUM_QUEUES: usize = 3;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;

/// Largest payload in one packet (Linux uses the same cap, VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;

/// Bytes each connection buffers from the guest towards the host socket; advertised to
/// the guest as our `buf_alloc`.
pub const CONN_TX_BUF_SIZE: u32 = 256 * 1024;
/// Forwarded bytes the guest has not been told about yet that trigger a CREDIT_UPDATE.
pub const CONN_CREDIT_UPDATE_THRESHOLD: u32 = CONN_TX_BUF_SIZE / 2;
/// Connections (host- plus guest-initiated) the muxer keeps at most.
pub const MAX_CONNECTIONS: usize = 1024;
/// Host clients still in the CONNECT handshake at most.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Longest CONNECT line we accept, newline included.
pub const MAX_CONNECT_LINE: usize = 32;
/// Control packets (RSTs for unknown connections) queued for the guest at most. When
/// full, the device stops taking TX packets so a flooding guest stalls itself.
pub const MAX_CONTROL_QUEUE: usize = 256;

/// How long a host-initiated connection waits for the guest's RESPONSE.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a host client may take to send its CONNECT line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long we wait for the guest's RST after we sent a full SHUTDOWN.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Granularity of the expiry sweep.
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// First host-side port handed to host-initiated connections (as Firecracker does,
/// high enough not to clash with ports guests usually listen on).
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
pub const EVENT_TRANSPORT_RESET: u32 = 0;
