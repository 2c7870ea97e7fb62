//! Taking a snapshot, on the main thread between two rounds of the event loop (so no
//! device runs meanwhile): pause the vCPUs, read the VM-wide and device state, write the
//! memory file, then the state file last, so a snapshot cut short by a crash has a state
//! file that fails its checksum instead of one that points at half-written memory.

use std::os::unix::fs::FileExt;
use std::os::unix::thread::RawPthread;
use std::time::{Duration, Instant};

use super::format::{self, SnapshotDocument};
use super::{lock, memory_file, MicroVmState, SnapshotError, SnapshotSetup};
use crate::builder::Vmm;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state;

/// How long the vCPUs get to leave KVM_RUN and save their state.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The state besides memory, read with the vCPUs paused.
fn collect(
    vmm: &Vmm,
    vcpus: Vec<VcpuState>,
    memory_blake3: [u8; 32],
) -> Result<MicroVmState, SnapshotError> {
    Ok(MicroVmState {
        mem_mib: vmm.mem_mib,
        memory_blake3,
        vm: vm_state::save(&vmm.vm)?,
        vcpus,
        serial: lock(&vmm.serial).snapshot(),
        i8042: lock(&vmm.i8042).state(),
        virtio: vmm.transports.iter().map(|t| lock(t).snapshot()).collect(),
    })
}

fn write_files(
    vmm: &Vmm,
    setup: &SnapshotSetup,
    vcpus: Vec<VcpuState>,
) -> Result<(), SnapshotError> {
    let digest = memory_file::write(&vmm.mem, &setup.mem)?;
    let state = collect(vmm, vcpus, digest)?;
    let bytes = format::encode(&SnapshotDocument::here(state))?;
    let io = |source| SnapshotError::File {
        what: "snapshot state",
        path: setup.state_path.clone(),
        source,
    };
    setup.state.set_len(0).map_err(io)?;
    setup.state.write_all_at(&bytes, 0).map_err(io)?;
    setup.state.sync_data().map_err(io)?;
    Ok(())
}

/// Takes a snapshot of `vmm`, whose vCPUs run on `threads`. The VM resumes afterwards
/// unless `--snapshot-exit` asked to stop (the vCPUs then stay parked until the process
/// exits); after a failure it always resumes.
pub fn take(vmm: &Vmm, threads: &[RawPthread]) -> Result<(), SnapshotError> {
    let Some(setup) = &vmm.snapshot else {
        return Ok(());
    };
    let start = Instant::now();
    let vcpus = setup.pause.pause(threads, PAUSE_TIMEOUT)?;
    let paused = start.elapsed();
    let result = write_files(vmm, setup, vcpus);
    if result.is_err() || !setup.exit_after {
        setup.pause.resume();
    }
    if result.is_ok() {
        log::info!(
            "snapshot taken: {} vCPUs paused in {} us, {} MiB written, {} ms in all",
            threads.len(),
            paused.as_micros(),
            vmm.mem_mib,
            start.elapsed().as_millis()
        );
    }
    result
}
