//! Virtio devices and the virtio-mmio transport.

pub mod block;
pub mod device;
pub mod mmio;
pub mod vsock;

pub use device::{ActivateContext, ActivateError, GuestMemory, VirtioDevice, VirtioInterrupt};
