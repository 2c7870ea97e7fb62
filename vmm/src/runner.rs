//! Runs a built VM: seccomp, vCPU threads, the event loop, and orderly exit.

use std::io::Write;
use std::os::unix::thread::{JoinHandleExt, RawPthread};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

use crate::builder::Vmm;
use crate::exit::ExitReason;
use crate::metrics;
use crate::seccomp::{self, FilterOptions, ThreadKind};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Vcpu(#[from] crate::vstate::vcpu::VcpuError),
    #[error("event loop: {0}")]
    EventLoop(event_manager::Error),
}

/// Logs the exit report and, with `--metrics-path`, writes it there as one JSON line.
fn report_metrics(vmm: &mut Vmm) {
    let blocks: Vec<_> = vmm
        .blocks
        .iter()
        .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).metrics.clone())
        .collect();
    let blocks: Vec<&metrics::BlockMetrics> = blocks.iter().map(|b| b.as_ref()).collect();
    let all = metrics::exit_report(&metrics::VMM_METRICS, &blocks, vmm.vsock_metrics.as_deref());
    log::info!("metrics: {all}");
    if let Some(f) = vmm.metrics_out.as_mut() {
        // Formatted first: File is unbuffered, and writeln! would write piece by piece.
        if let Err(e) = f.write_all(format!("{all}\n").as_bytes()) {
            log::warn!("writing the metrics file: {e}");
        }
    }
}

/// Takes the snapshot SIGUSR1 asked for; returns the exit reason when the VM is to stop
/// after it. A failed snapshot is logged and the VM runs on.
fn snapshot_if_requested(vmm: &Vmm, threads: &[RawPthread]) -> Option<ExitReason> {
    let setup = vmm.snapshot.as_ref()?;
    if !setup.requested.swap(false, Ordering::AcqRel) {
        return None;
    }
    match crate::snapshot::take(vmm, threads) {
        Ok(()) if setup.exit_after => Some(ExitReason::Snapshotted),
        Ok(()) => None,
        Err(e) => {
            log::error!("snapshot failed, the VM runs on: {e}");
            None
        }
    }
}

/// Runs until an exit reason is reported. Threads are left running: the caller exits the
/// process right away, which is what stops them.
pub fn run(vmm: Vmm, use_seccomp: bool) -> Result<ExitReason, RunError> {
    // Never dropped: the process exits once this returns. A vCPU thread on its way out
    // may still hold references to the devices; if the main thread dropped its own
    // first, the device drop (the vsock socket file's unlink, outside a vCPU's seccomp
    // filter) would run on that vCPU thread and the kernel would kill the process with
    // SIGSYS instead of letting it exit with its reason (seen under nested KVM).
    let mut vmm = std::mem::ManuallyDrop::new(vmm);
    let opts = FilterOptions {
        pvm: vmm.pvm,
        snapshots: vmm.snapshot.is_some(),
    };
    let (main_filter, vcpu_filter) = if use_seccomp {
        (
            Some(seccomp::compile(ThreadKind::Main, opts)?),
            Some(seccomp::compile(ThreadKind::Vcpu, opts)?),
        )
    } else {
        log::warn!("seccomp is DISABLED (--no-seccomp): use this only for debugging");
        (None, None)
    };

    let start = Arc::new(Barrier::new(vmm.vcpus.len() + 1));
    let mut threads = Vec::with_capacity(vmm.vcpus.len());
    for vcpu in vmm.vcpus.drain(..) {
        threads.push(
            vcpu.spawn(vcpu_filter.clone(), start.clone())?
                .as_pthread_t(),
        );
    }
    if let Some(f) = &main_filter {
        seccomp::install(f)?;
    }
    // Every thread has its filter now; let the guest run.
    start.wait();

    let reason = loop {
        if let Some(r) = vmm.exit.reason() {
            break r;
        }
        if let Some(r) = snapshot_if_requested(&vmm, &threads) {
            break r;
        }
        vmm.event_manager.run().map_err(RunError::EventLoop)?;
    };
    match &reason {
        ExitReason::Reset | ExitReason::Snapshotted => log::info!("VMM exiting: {reason}"),
        _ => log::warn!("VMM exiting: {reason}"),
    }
    // A vCPU blocked writing to a full stdout pipe may hold the serial lock; do not wait.
    if let Ok(mut s) = vmm.serial.try_lock() {
        s.flush();
    }
    report_metrics(&mut vmm);
    Ok(reason)
}
