//! virtio-vsock device with a Firecracker-compatible hybrid Unix-socket backend.
//!
//! Layout: `packet` (wire header, chain parsing), `csm` (per-connection state machine
//! and flow control), `unix` (host Unix-socket muxer and the CONNECT handshake),
//! `device` (queues, config, `VirtioDevice`), `event_handler` (event loop).
//!
//! Syscalls this device makes on the event-loop thread (for the seccomp filter):
//! `read`, `write` (eventfds, timerfd), `recvfrom` (std `UnixStream::read` on some
//! libcs), `sendto` (our `send` with MSG_NOSIGNAL), `accept4`, `socket` (AF_UNIX,
//! SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC), `connect`, `shutdown`, `close`,
//! `fcntl` (F_GETFL/F_SETFL for `set_nonblocking`), `ioctl` (FIONBIO, used by std's
//! `set_nonblocking` on Linux), `epoll_ctl`, `epoll_wait`/`epoll_pwait`,
//! `timerfd_settime`, `unlink` (socket file on drop), plus `mmap`/`munmap`/`brk`/
//! `madvise` for heap growth and `clock_gettime` (vDSO, usually no syscall).
//! At construction only (any thread): `socket`, `bind`, `listen`, `epoll_create1`,
//! `timerfd_create`, `eventfd2`.

mod csm;
pub mod defs;
mod device;
mod event_handler;
pub mod metrics;
pub mod packet;
#[cfg(any(test, feature = "vsock-test-utils"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod unix;

pub use device::Vsock;
pub use metrics::VsockMetrics;
pub use unix::{parse_connect_line, HandshakeError, MuxerError};

/// Errors creating the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is invalid (must be 3..=u32::MAX)")]
    InvalidCid(u64),
    #[error("host backend: {0}")]
    Backend(MuxerError),
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
}
