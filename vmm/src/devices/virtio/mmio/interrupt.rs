//! Interrupt side of the transport: the InterruptStatus register plus an irqfd.

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::VirtioInterrupt;

pub const VIRTIO_MMIO_INT_VRING: u32 = 0x01;
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x02;

pub struct MmioInterrupt {
    status: AtomicU32,
    irq_evt: EventFd,
}

impl MmioInterrupt {
    /// `irq_evt` is registered with KVM as an irqfd for the device's GSI.
    pub fn new(irq_evt: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irq_evt,
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// A snapshot's InterruptStatus (the guest has not acknowledged these bits yet).
    pub fn restore_status(&self, bits: u32) {
        self.status.store(
            bits & (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG),
            Ordering::SeqCst,
        );
    }

    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    pub fn irq_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    fn raise(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irq_evt.write(1)
    }
}

impl VirtioInterrupt for MmioInterrupt {
    fn signal_used_queue(&self, _queue_index: u16) -> std::io::Result<()> {
        self.raise(VIRTIO_MMIO_INT_VRING)
    }

    fn signal_config_change(&self) -> std::io::Result<()> {
        self.raise(VIRTIO_MMIO_INT_CONFIG)
    }
}
