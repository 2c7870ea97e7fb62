//! `vmm --probe-host`: what this host's KVM can give guests, as one JSON object, so a
//! caller starting many VMs probes once and passes the answers as flags.

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;

use crate::config::XsaveMode;
use crate::vstate::vm;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error("KVM_GET_SUPPORTED_CPUID: {0}")]
    Cpuid(kvm_ioctls::Error),
}

/// `{"xsave": true, "tsc_deadline": true, "pvm": false}`.
pub fn host(kvm_fd: Option<i32>) -> Result<String, ProbeError> {
    let kvm = vm::open_kvm(kvm_fd)?;
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ProbeError::Cpuid)?;
    let pvm = crate::pvm::is_pvm_host();
    let xsave = crate::builder::xsave_usable(&kvm, &supported, XsaveMode::Auto, pvm);
    Ok(serde_json::json!({
        "xsave": xsave,
        "tsc_deadline": kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
        "pvm": pvm,
    })
    .to_string())
}
