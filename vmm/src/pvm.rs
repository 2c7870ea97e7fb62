//! PVM hosts: `/dev/kvm` provided by the `kvm_pvm` module (KVM without VMX/SVM on a nested
//! host). Stock guest kernels boot there only as far as their first userspace syscall, and
//! need `noxsave clearcpuid=popcnt,smap,smep` on the command line to get that far.
//!
//! A stock kernel lives in the upper half of the address space, which PVM reserves for the
//! host, so PVM emulates it instruction by instruction; KVM's emulator cannot do `int3` in
//! long mode, which Linux executes once at boot (`int3_selftest`). The vCPU loop delivers
//! that #BP itself (`Vcpu::pvm_int3_workaround`).

use std::path::Path;

const PVM_MODULE: &str = "/sys/module/kvm_pvm";

pub fn is_pvm_host() -> bool {
    Path::new(PVM_MODULE).exists()
}

/// Logs the one warning users need to understand what they will see.
pub fn warn_if_pvm() -> bool {
    let pvm = is_pvm_host();
    if pvm {
        log::warn!(
            "PVM-based /dev/kvm detected ({PVM_MODULE}): an unmodified guest runs only its \
             kernel, slowly, and stops at its first userspace syscall; appending \
             'noxsave clearcpuid=popcnt,smap,smep' to the kernel command line"
        );
    }
    pvm
}
