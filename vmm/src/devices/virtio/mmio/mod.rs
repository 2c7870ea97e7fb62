//! virtio-mmio transport (virtio 1.x, "version 2" register layout).

pub mod interrupt;
pub mod transport;

pub use interrupt::MmioInterrupt;
pub use transport::MmioTransport;
