//! VM creation: KVM handle, TSS/identity-map addresses, in-kernel irqchip and PIT.

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};

use crate::arch::x86_64::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM_CREATE_VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR: {0}")]
    Tss(kvm_ioctls::Error),
    #[error("KVM_SET_IDENTITY_MAP_ADDR: {0}")]
    IdentityMap(kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP: {0}")]
    IrqChip(kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2: {0}")]
    Pit(kvm_ioctls::Error),
    #[error("KVM API version {0}, expected 12")]
    ApiVersion(i32),
}

/// Opens `/dev/kvm`, or takes over `inherited` (`--kvm-fd`, checked by the config to be
/// an open `/dev/kvm`).
pub fn open_kvm(inherited: Option<i32>) -> Result<Kvm, VmError> {
    let kvm = match inherited {
        // SAFETY: the descriptor is an open /dev/kvm (VmConfig::validate checked its
        // device number) that nothing else in this process uses or closes: the VMM takes
        // ownership of it here, once.
        Some(fd) => unsafe { <Kvm as std::os::fd::FromRawFd>::from_raw_fd(fd) },
        None => Kvm::new().map_err(VmError::OpenKvm)?,
    };
    if kvm.get_api_version() != 12 {
        return Err(VmError::ApiVersion(kvm.get_api_version()));
    }
    Ok(kvm)
}

/// Opens KVM (see [`open_kvm`]) and creates the VM with its in-kernel devices.
pub fn create_vm(inherited: Option<i32>) -> Result<(Kvm, VmFd), VmError> {
    let kvm = open_kvm(inherited)?;
    let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
    // The identity map page must come before the TSS, which then takes the 3 pages after it.
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .map_err(VmError::IdentityMap)?;
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(VmError::Tss)?;
    vm.create_irq_chip().map_err(VmError::IrqChip)?;
    // The dummy speaker keeps port 0x61 in the kernel instead of exiting to us.
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::Pit)?;
    Ok((kvm, vm))
}
