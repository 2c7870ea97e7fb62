//! vCPU configuration and the per-vCPU run loop (one thread each).

use std::sync::{Arc, Barrier};

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::pause::PauseControl;
use super::vcpu_state::{self, VcpuState};
use crate::arch::x86_64::{cpuid, interrupts, msr, regs};
use crate::devices::bus::Bus;
use crate::exit::{ExitNotifier, ExitReason};
use crate::metrics::{inc, VMM_METRICS};

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_CREATE_VCPU {0}: {1}")]
    Create(u8, kvm_ioctls::Error),
    #[error("KVM_SET_CPUID2: {0}")]
    Cpuid(kvm_ioctls::Error),
    #[error(transparent)]
    Msr(#[from] msr::MsrError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Lapic(#[from] interrupts::LapicError),
    #[error("cannot spawn vCPU thread: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Restore(#[from] super::vcpu_state::VcpuStateError),
}

pub struct Vcpu {
    pub id: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitNotifier>,
    pvm: bool,
    snapshots: Option<SnapshotSupport>,
}

/// What a vCPU needs to take part in snapshots.
#[derive(Clone)]
pub struct SnapshotSupport {
    pub pause: Arc<PauseControl>,
    /// The MSRs a snapshot saves (KVM_GET_MSR_INDEX_LIST, read before seccomp).
    pub msr_indices: Arc<Vec<u32>>,
}

/// Everything the vCPUs share.
#[derive(Clone)]
pub struct VcpuShared {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exit: Arc<ExitNotifier>,
    /// PVM host: internal errors may be the int3 PVM cannot emulate.
    pub pvm: bool,
    /// Set when the VM may be snapshotted (`--snapshot-state`).
    pub snapshots: Option<SnapshotSupport>,
}

impl Vcpu {
    /// Creates vCPU `id` and sets the boot state: CPUID, MSRs, registers, FPU, LAPIC.
    /// Only the boot processor gets the entry point; APs wait for INIT/SIPI in-kernel.
    pub fn new(
        vm: &VmFd,
        id: u8,
        vcpus: u8,
        supported_cpuid: &CpuId,
        entry: u64,
        shared: VcpuShared,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| VcpuError::Create(id, e))?;
        fd.set_cpuid2(&cpuid::vcpu_cpuid(supported_cpuid, id, vcpus))
            .map_err(VcpuError::Cpuid)?;
        msr::setup_msrs(&fd)?;
        if id == 0 {
            regs::setup_regs(&fd, entry)?;
            regs::setup_sregs(&fd)?;
        }
        regs::setup_fpu(&fd)?;
        interrupts::set_lint(&fd)?;
        Ok(Self::with_fd(id, fd, shared))
    }

    /// Creates a vCPU with the state a snapshot saved for it.
    pub fn restored(vm: &VmFd, state: &VcpuState, shared: VcpuShared) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(state.id))
            .map_err(|e| VcpuError::Create(state.id, e))?;
        vcpu_state::restore(&fd, state)?;
        Ok(Self::with_fd(state.id, fd, shared))
    }

    fn with_fd(id: u8, fd: VcpuFd, shared: VcpuShared) -> Self {
        Self {
            id,
            fd,
            pio: shared.pio,
            mmio: shared.mmio,
            exit: shared.exit,
            pvm: shared.pvm,
            snapshots: shared.snapshots,
        }
    }

    /// Parks this vCPU for a snapshot. KVM_RUN with immediate_exit first completes an
    /// I/O exit the guest is still inside, so the saved registers are past it.
    fn pause_for_snapshot(&mut self) {
        let Some(s) = self.snapshots.clone() else {
            return;
        };
        self.fd.set_kvm_immediate_exit(1);
        let _ = self.fd.run();
        self.fd.set_kvm_immediate_exit(0);
        let state = vcpu_state::save(&self.fd, self.id, &s.msr_indices);
        s.pause.park(self.id, state);
    }

    /// PVM emulates an unmodified 64-bit kernel instruction by instruction, and KVM's
    /// emulator cannot do `int3` outside real mode (Linux runs an int3 self-test at boot).
    /// Deliver it as the #BP the CPU would raise: RIP past the instruction, exception 3.
    fn pvm_int3_workaround(&mut self) -> bool {
        const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
        const FLAG_INSTRUCTION_BYTES: u64 = 1;
        const BP_VECTOR: u8 = 3;
        let run = self.fd.get_kvm_run();
        // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal` member of
        // the exit union; indexes are checked against `ndata` and the array length.
        let is_int3 = unsafe {
            let i = run.__bindgen_anon_1.internal;
            i.suberror == KVM_INTERNAL_ERROR_EMULATION
                && i.ndata >= 2
                && i.data[0] & FLAG_INSTRUCTION_BYTES != 0
                && (i.data[1] >> 8) & 0xff == 0xcc
        };
        if !is_int3 {
            return false;
        }
        let (Ok(mut regs), Ok(mut events)) = (self.fd.get_regs(), self.fd.get_vcpu_events()) else {
            return false;
        };
        regs.rip += 1;
        // "Injected" (being delivered) rather than "pending": the CPU already executed
        // the instruction, so the frame must carry the RIP after it.
        events.exception.injected = 1;
        events.exception.pending = 0;
        events.exception.nr = BP_VECTOR;
        events.exception.has_error_code = 0;
        let ok = self.fd.set_regs(&regs).is_ok() && self.fd.set_vcpu_events(&events).is_ok();
        if ok {
            crate::rl_log!(
                info,
                "vcpu{}: delivered int3 at {:#x} as #BP (PVM)",
                self.id,
                regs.rip - 1
            );
        }
        ok
    }

    /// Suberror, its data words and the guest RIP, to make emulation failures debuggable.
    fn internal_error_details(&mut self) -> String {
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        let run = self.fd.get_kvm_run();
        // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal` member of
        // the kvm_run exit union; `ndata` is clamped to the array length before use.
        let (suberror, data) = unsafe {
            let i = run.__bindgen_anon_1.internal;
            let n = (i.ndata as usize).min(i.data.len());
            (i.suberror, i.data[..n].to_vec())
        };
        format!("KVM_EXIT_INTERNAL_ERROR suberror {suberror} data {data:x?} rip {rip:#x}")
    }

    /// Spawns the vCPU thread. It installs `filter` (if any), waits on `start`, then runs.
    pub fn spawn(
        self,
        filter: Option<seccompiler::BpfProgram>,
        start: Arc<Barrier>,
    ) -> Result<std::thread::JoinHandle<()>, VcpuError> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .spawn(move || self.thread_main(filter, start))
            .map_err(VcpuError::Spawn)
    }

    fn thread_main(mut self, filter: Option<seccompiler::BpfProgram>, start: Arc<Barrier>) {
        if let Some(f) = filter {
            if let Err(e) = seccompiler::apply_filter(&f) {
                self.exit.notify(ExitReason::VcpuError {
                    vcpu: self.id,
                    error: format!("installing seccomp filter: {e}"),
                });
                start.wait();
                return;
            }
        }
        start.wait();
        if self.id == 0 {
            log_first_kvm_run();
        }
        let reason = self.run_loop();
        self.exit.notify(reason);
    }

    fn run_loop(&mut self) -> ExitReason {
        let id = self.id;
        let error = |error: String| ExitReason::VcpuError { vcpu: id, error };
        loop {
            if self.snapshots.as_ref().is_some_and(|s| s.pause.requested()) {
                self.pause_for_snapshot();
                continue;
            }
            match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    if !self.pio.read(u64::from(port), data) {
                        inc(&VMM_METRICS.unhandled_pio);
                        data.fill(0xff);
                    }
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    if !self.pio.write(u64::from(port), data) {
                        inc(&VMM_METRICS.unhandled_pio);
                    }
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if !self.mmio.read(addr, data) {
                        inc(&VMM_METRICS.unhandled_mmio);
                        crate::rl_log!(debug, "vcpu{id}: unhandled MMIO read at {addr:#x}");
                        data.fill(0);
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    if !self.mmio.write(addr, data) {
                        inc(&VMM_METRICS.unhandled_mmio);
                        crate::rl_log!(debug, "vcpu{id}: unhandled MMIO write at {addr:#x}");
                    }
                }
                Ok(VcpuExit::Shutdown) => return ExitReason::TripleFault { vcpu: self.id },
                // KVM_SYSTEM_EVENT_SHUTDOWN / RESET (e.g. PSCI-like paths): treat as a reboot.
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    log::info!("vcpu{id}: KVM system event {kind}");
                    return ExitReason::Reset;
                }
                Ok(VcpuExit::Hlt) => {
                    return error("guest halted without an in-kernel irqchip".into())
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return error(format!(
                        "KVM_EXIT_FAIL_ENTRY: hardware reason {reason:#x} on cpu {cpu}"
                    ))
                }
                Ok(VcpuExit::InternalError) => {
                    if self.pvm && self.pvm_int3_workaround() {
                        continue;
                    }
                    return error(self.internal_error_details());
                }
                Ok(other) => return error(format!("unexpected exit: {other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => return error(format!("KVM_RUN: {e}")),
            }
        }
    }
}

/// Wall and CPU time from VMM start to the first KVM_RUN; the monotonic timestamp lets
/// vmm-bench measure from its own `exec`.
fn log_first_kvm_run() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let wall_us = crate::logger::start_instant().elapsed().as_micros();
    let cpu_us = crate::devices::legacy::boot_timer::process_cpu_us();
    log::info!(
        "first KVM_RUN: wall_since_main_us={wall_us} process_cpu_us={cpu_us} monotonic_ns={mono_ns}"
    );
}
