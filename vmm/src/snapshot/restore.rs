//! Resuming a snapshot in a new vmm process: check the state file, map the memory file
//! copy-on-write, rebuild the VM and its devices from the command line, then put the
//! saved state back: VM-wide first, the vCPUs next, the devices last (a restored vsock
//! raises an interrupt, which must land on the restored interrupt controllers).

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;

use super::format::{self, MAX_STATE_BYTES};
use super::{lock, memory_file, MicroVmState, SnapshotError};
use crate::builder::{assemble, BuildError, VmCore, Vmm};
use crate::config::{RestoreConfig, VmConfig};
use crate::vstate::vcpu::Vcpu;
use crate::vstate::{memory, vm, vm_state};

/// Reads at most [`MAX_STATE_BYTES`] (plus one, to tell a larger file) and checks it.
fn read_state(r: &RestoreConfig) -> Result<MicroVmState, SnapshotError> {
    let io = SnapshotError::file("snapshot state", &r.state);
    let file = File::open(&r.state).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(SnapshotError::file("snapshot state", &r.state))?;
    Ok(format::decode(&bytes)?.state)
}

fn expected_devices(cfg: &VmConfig) -> usize {
    cfg.drives.len() + usize::from(cfg.vsock.is_some())
}

/// Builds a VM from the snapshot `r` with the devices `cfg` configures.
pub fn restore(
    cfg: &VmConfig,
    r: &RestoreConfig,
    signal_fd: OwnedFd,
    pvm: bool,
) -> Result<Vmm, BuildError> {
    let started = std::time::Instant::now();
    let state = read_state(r)?;
    if state.virtio.len() != expected_devices(cfg) {
        return Err(SnapshotError::DeviceCount {
            found: state.virtio.len(),
            expected: expected_devices(cfg),
        }
        .into());
    }
    let ids_in_order = state
        .vcpus
        .iter()
        .enumerate()
        .all(|(i, v)| usize::from(v.id) == i);
    let max = usize::from(crate::arch::x86_64::layout::MAX_VCPUS);
    if state.vcpus.is_empty() || state.vcpus.len() > max || !ids_in_order {
        return Err(SnapshotError::VcpuCount(state.vcpus.len()).into());
    }
    let mem_file = File::open(&r.mem).map_err(SnapshotError::file("snapshot memory", &r.mem))?;
    let expected = r.verify_mem.then_some(&state.memory_blake3);
    let mem = memory_file::map(&mem_file, state.mem_mib, expected).map_err(SnapshotError::from)?;
    let (kvm, vmfd) = vm::create_vm(cfg.kvm_fd)?;
    memory::register_memory(&vmfd, &mem)?;
    vm_state::restore(&vmfd, &state.vm).map_err(SnapshotError::from)?;
    let core = VmCore {
        kvm,
        vm: vmfd,
        mem,
        mem_mib: state.mem_mib,
    };
    let a = assemble(cfg, &core, signal_fd, pvm, Some(&state.serial))?;
    let vcpus = state
        .vcpus
        .iter()
        .map(|s| Vcpu::restored(&core.vm, s, a.shared.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    lock(&a.i8042).restore(&state.i8042);
    for (index, (t, s)) in a.transports.iter().zip(&state.virtio).enumerate() {
        lock(t)
            .restore(s)
            .map_err(|source| SnapshotError::Transport { index, source })?;
    }
    log::info!(
        "restored from snapshot {}: {} vCPUs, {} MiB, {} virtio devices in {} ms",
        r.state.display(),
        vcpus.len(),
        state.mem_mib,
        state.virtio.len(),
        started.elapsed().as_millis()
    );
    Ok(Vmm::new(a, core, vcpus, String::new()))
}
