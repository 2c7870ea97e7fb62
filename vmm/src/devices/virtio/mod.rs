//! Virtio devices and the virtio-mmio transport.

pub mod device;

pub use device::{ActivateContext, ActivateError, GuestMemory, VirtioDevice, VirtioInterrupt};
