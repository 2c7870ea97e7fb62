//! Emulated devices.

pub mod bus;
pub mod legacy;
pub mod virtio;

/// An `EventFd` that vm-superio devices can trigger (used for irqfds and exit events).
pub struct EventFdTrigger(pub vmm_sys_util::eventfd::EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
