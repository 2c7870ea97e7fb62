//! Emulated devices.

pub mod virtio;
