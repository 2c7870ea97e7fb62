//! Virtio devices and the virtio-mmio transport.

pub mod device;
pub mod vsock;

pub use device::{ActivateContext, ActivateError, GuestMemory, VirtioDevice, VirtioInterrupt};
