//! The host's `/dev/kvm` as the worker uses it: a descriptor handed to each monitor,
//! and an idle VM held open.

use super::start_err;
use crate::sandbox::SandboxError;

/// Opens the host's `/dev/kvm` for one monitor, which inherits it as [`crate::sandbox::launcher::KVM_FD`]:
/// the jail then needs no device node (and its run dir may be on a `nodev` mount).
pub(super) fn open_kvm() -> Result<std::os::fd::OwnedFd, SandboxError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| start_err(format!("cannot open /dev/kvm: {e}")))
}

/// `KVM_CREATE_VM`: `_IO(KVMIO, 0x01)`.
const KVM_CREATE_VM: u64 = 0xAE01;

/// An empty VM held for the backend's life. Linux turns virtualization on in every CPU
/// when the first VM is created and off again, by an IPI to every CPU, when the last one
/// goes: holding one spares each microVM start and exit on an otherwise idle host that
/// broadcast (which under nested TCG at times never completes: a soft lockup in
/// `kvm_destroy_vm`).
pub(super) fn hold_a_vm() -> Result<std::os::fd::OwnedFd, SandboxError> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let kvm = open_kvm()?;
    // SAFETY: KVM_CREATE_VM takes the machine type by value (0: the default) and passes no
    // memory; it returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if fd < 0 {
        return Err(start_err(format!(
            "KVM_CREATE_VM: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just returned by the kernel to this thread and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
