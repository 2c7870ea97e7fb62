//! Lock-free counters for the vsock device, shared with whoever reports metrics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! vsock_metrics {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Device counters. All are monotonic except `conns_open`.
        #[derive(Debug, Default)]
        pub struct VsockMetrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl VsockMetrics {
            /// Name/value pairs of every counter, for logging or export.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

vsock_metrics! {
    /// Packets the guest sent (TX queue) that were parsed.
    tx_packets,
    /// Payload bytes the guest sent and the host side accepted.
    tx_bytes,
    /// Packets delivered to the guest (RX queue).
    rx_packets,
    /// Payload bytes delivered to the guest.
    rx_bytes,
    /// Event-queue events delivered.
    events_sent,
    /// Connections created (either direction).
    conns_added,
    /// Connections torn down.
    conns_removed,
    /// Connections currently open.
    conns_open,
    /// Connections killed by a connect or shutdown timeout.
    conns_timed_out,
    /// Connections refused because `MAX_CONNECTIONS` was reached.
    conns_over_limit,
    /// Guest connects to a host port with no `<uds>_<port>` listener.
    host_connect_failed,
    /// Host clients dropped for a malformed, oversized or timed-out CONNECT line.
    handshake_failed,
    /// RST packets sent to the guest.
    rst_sent,
    /// TX chains shorter than a header, or unreadable.
    drop_short_desc,
    /// TX headers with `len` beyond the payload cap or beyond the chain.
    drop_bad_len,
    /// TX packets with a wrong source or destination CID.
    drop_bad_cid,
    /// TX packets of a type other than STREAM.
    drop_bad_type,
    /// TX packets with an op the spec does not define.
    drop_unknown_op,
    /// TX packets for a connection that does not exist (answered with RST).
    drop_unknown_conn,
    /// TX data beyond the credit we granted (connection reset).
    drop_credit_violation,
    /// TX packets not valid in the connection's state (connection reset).
    drop_bad_state,
    /// RX chains too short for a header.
    drop_short_rx_desc,
    /// Control packets dropped because the control queue was full.
    drop_control_queue_full,
    /// Errors talking to host sockets.
    host_io_errors,
    /// Failures of the device's own machinery (eventfds, epoll, queues, interrupts).
    device_errors,
}

/// Bumps a counter by one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Bumps a counter by `n`.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Decrements a gauge, never below zero.
pub fn dec(c: &AtomicU64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}
