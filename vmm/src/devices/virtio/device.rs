//! The contract between the virtio-mmio transport and each virtio device.
//!
//! The transport (vCPU threads, via MMIO exits) owns the register state machine and hands
//! the device its queues on DRIVER_OK. The device does its I/O on the VMM's event loop
//! (main thread): at build time it is registered with the `event-manager` as a
//! `MutEventSubscriber`; in `init` it registers only its activation eventfd, and
//! `activate` writes to that eventfd so the handler then registers the queue eventfds and
//! its backend fds. Devices are shared as `Arc<Mutex<D>>` between both sides.

use std::sync::Arc;

use virtio_queue::{Queue, QueueState};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as every device sees it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Why a device refused to activate.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("expected {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("queue {0} is not valid")]
    InvalidQueue(usize),
    #[error("device already activated")]
    AlreadyActive,
    #[error("activation eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("backend: {0}")]
    Backend(String),
}

/// How a device tells the guest that something happened. Implemented by the transport,
/// which sets the interrupt status register and triggers the device's irqfd.
pub trait VirtioInterrupt: Send + Sync {
    /// A used buffer was added to queue `queue_index`.
    fn signal_used_queue(&self, queue_index: u16) -> std::io::Result<()>;
    /// The device configuration space changed.
    fn signal_config_change(&self) -> std::io::Result<()>;
}

/// Everything a device receives on activation.
pub struct ActivateContext {
    pub mem: GuestMemory,
    /// Queues in index order, already validated by the transport (`Queue::is_valid`).
    pub queues: Vec<Queue>,
    /// One eventfd per queue, registered by the transport as ioeventfd on QueueNotify.
    pub queue_evts: Vec<EventFd>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// A virtio device behind the virtio-mmio transport (virtio 1.x only).
pub trait VirtioDevice: Send {
    /// Virtio device ID (2 = block, 19 = vsock, ...).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features offered to the driver; the transport always adds VIRTIO_F_VERSION_1.
    fn avail_features(&self) -> u64;
    /// Features the driver accepted (a subset of `avail_features`).
    fn set_acked_features(&mut self, acked: u64);
    /// Reads the device configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; writes past its end are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Takes the queues on DRIVER_OK and starts serving them.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Device reset by the driver (status written 0). Returns the queue eventfds so the
    /// transport can re-register them, or `None` if the device cannot be reset.
    fn reset(&mut self) -> Option<Vec<EventFd>>;
    /// True once `activate` succeeded and until `reset`.
    fn is_activated(&self) -> bool;
    /// The live state of the queues the device serves, in index order (empty when not
    /// activated): a snapshot needs the device's ring positions, not the transport's.
    fn queue_states(&self) -> Vec<QueueState>;
    /// Called once after a restored device was activated from a snapshot, before the
    /// guest runs again. Devices whose backend connections did not survive say so here.
    fn restored(&mut self) {}
}
