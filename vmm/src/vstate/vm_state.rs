//! The VM-wide state KVM keeps: the in-kernel PICs and IOAPIC, the PIT, and kvmclock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VmStateError {
    #[error("{ioctl}: {source}")]
    Ioctl {
        ioctl: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("snapshot holds {0} irqchips, expected 3 (two PICs and the IOAPIC)")]
    ChipCount(usize),
    #[error("snapshot irqchip {index} has chip id {found}, expected {expected}")]
    ChipId {
        index: usize,
        found: u32,
        expected: u32,
    },
}

fn ioctl(ioctl: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmStateError {
    move |source| VmStateError::Ioctl { ioctl, source }
}

const CHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    /// PIC master, PIC slave, IOAPIC, in that order.
    pub irqchips: Vec<kvm_irqchip>,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
    /// Host `CLOCK_REALTIME` when the snapshot was taken, in nanoseconds.
    pub host_realtime_ns: u64,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("clock", &self.clock.clock)
            .field("host_realtime_ns", &self.host_realtime_ns)
            .finish_non_exhaustive()
    }
}

pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Read with every vCPU paused.
pub fn save(vm: &VmFd) -> Result<VmState, VmStateError> {
    let mut irqchips = Vec::with_capacity(CHIPS.len());
    for chip_id in CHIPS {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip)
            .map_err(ioctl("KVM_GET_IRQCHIP"))?;
        irqchips.push(chip);
    }
    Ok(VmState {
        irqchips,
        pit: vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?,
        clock: vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?,
        host_realtime_ns: realtime_ns(),
    })
}

/// Restores into a VM made by `vm::create_vm`. kvmclock moves on by the host time that
/// passed since the snapshot, so the guest's wall clock stays right (as after a suspend)
/// instead of resuming at the moment the snapshot was taken.
pub fn restore(vm: &VmFd, s: &VmState) -> Result<(), VmStateError> {
    vm.set_pit2(&s.pit).map_err(ioctl("KVM_SET_PIT2"))?;
    let elapsed = realtime_ns().saturating_sub(s.host_realtime_ns);
    let clock = kvm_clock_data {
        clock: s.clock.clock.saturating_add(elapsed),
        ..Default::default()
    };
    vm.set_clock(&clock).map_err(ioctl("KVM_SET_CLOCK"))?;
    if s.irqchips.len() != CHIPS.len() {
        return Err(VmStateError::ChipCount(s.irqchips.len()));
    }
    for (index, (chip, expected)) in s.irqchips.iter().zip(CHIPS).enumerate() {
        if chip.chip_id != expected {
            return Err(VmStateError::ChipId {
                index,
                found: chip.chip_id,
                expected,
            });
        }
        vm.set_irqchip(chip).map_err(ioctl("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}
