//! A vCPU's architectural state as KVM exposes it, saved on the vCPU's own thread while
//! it is out of KVM_RUN and restored into a fresh vCPU before its thread starts.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("vCPU {vcpu}: {ioctl}: {source}")]
    Ioctl {
        vcpu: u8,
        ioctl: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {vcpu}: building an ioctl argument: {source}")]
    Fam {
        vcpu: u8,
        source: vmm_sys_util::fam::Error,
    },
    #[error("vCPU {vcpu}: KVM_SET_MSRS refused MSR {index:#x}")]
    MsrRefused { vcpu: u8, index: u32 },
    #[error("vCPU {vcpu}: the snapshot's TSC runs at {saved} kHz, this host's vCPU at {here} kHz and KVM cannot scale it: {source}")]
    TscFrequency {
        vcpu: u8,
        saved: u32,
        here: u32,
        source: kvm_ioctls::Error,
    },
}

#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub id: u8,
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
    /// `None` where KVM cannot report it.
    pub tsc_khz: Option<u32>,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("id", &self.id)
            .field("rip", &self.regs.rip)
            .field("msrs", &self.msrs.len())
            .finish_non_exhaustive()
    }
}

struct Ctx(u8);

impl Ctx {
    fn ioctl(&self, ioctl: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuStateError {
        let vcpu = self.0;
        move |source| VcpuStateError::Ioctl {
            vcpu,
            ioctl,
            source,
        }
    }

    fn fam(&self) -> impl Fn(vmm_sys_util::fam::Error) -> VcpuStateError {
        let vcpu = self.0;
        move |source| VcpuStateError::Fam { vcpu, source }
    }
}

/// Reads every MSR of `indices` KVM lets this vCPU read. KVM_GET_MSRS stops at the
/// first one it refuses (some listed MSRs depend on CPUID bits the guest lacks): that
/// one is skipped and the read goes on after it.
fn read_msrs(fd: &VcpuFd, c: &Ctx, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(c.fam())?;
        let read = fd
            .get_msrs(&mut msrs)
            .map_err(c.ioctl("KVM_GET_MSRS"))?
            .min(batch.len());
        out.extend_from_slice(&msrs.as_slice()[..read]);
        // A short read stopped at a refused MSR: skip it and go on after it.
        let consumed = if read < batch.len() { read + 1 } else { read };
        rest = &rest[consumed..];
    }
    Ok(out)
}

/// Saves vCPU `id`. KVM_GET_MP_STATE goes first (it can move pending LAPIC events into
/// the vCPU's state) and KVM_GET_VCPU_EVENTS last; the caller has completed any pending
/// I/O exit first (KVM_RUN with immediate_exit).
pub fn save(fd: &VcpuFd, id: u8, msr_indices: &[u32]) -> Result<VcpuState, VcpuStateError> {
    let c = Ctx(id);
    let mp_state = fd.get_mp_state().map_err(c.ioctl("KVM_GET_MP_STATE"))?;
    let regs = fd.get_regs().map_err(c.ioctl("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(c.ioctl("KVM_GET_SREGS"))?;
    let xsave = fd.get_xsave().map_err(c.ioctl("KVM_GET_XSAVE"))?;
    let xcrs = fd.get_xcrs().map_err(c.ioctl("KVM_GET_XCRS"))?;
    let debug_regs = fd.get_debug_regs().map_err(c.ioctl("KVM_GET_DEBUGREGS"))?;
    let lapic = fd.get_lapic().map_err(c.ioctl("KVM_GET_LAPIC"))?;
    let msrs = read_msrs(fd, &c, msr_indices)?;
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(c.ioctl("KVM_GET_CPUID2"))?
        .as_slice()
        .to_vec();
    let tsc_khz = fd.get_tsc_khz().ok();
    let events = fd
        .get_vcpu_events()
        .map_err(c.ioctl("KVM_GET_VCPU_EVENTS"))?;
    Ok(VcpuState {
        id,
        cpuid,
        mp_state,
        regs,
        sregs,
        xsave,
        xcrs,
        debug_regs,
        lapic,
        msrs,
        events,
        tsc_khz,
    })
}

/// A TSC rate this close to the snapshot's is kept when KVM cannot scale to it: a
/// host calibrates its TSC anew at each boot (by a few hundred ppm under emulation), and
/// KVM without TSC scaling refuses any rate below its own. The guest keeps time by
/// kvmclock, which the restore moves on by the host's clock.
const TSC_TOLERANCE_PPM: u64 = 10_000;

/// Keeps the snapshot's TSC rate where this host's differs (KVM scales it if it can).
fn restore_tsc_khz(fd: &VcpuFd, c: &Ctx, saved: Option<u32>) -> Result<(), VcpuStateError> {
    let (Some(saved), Ok(here)) = (saved, fd.get_tsc_khz()) else {
        return Ok(());
    };
    if saved == here {
        return Ok(());
    }
    match fd.set_tsc_khz(saved) {
        Ok(()) => Ok(()),
        Err(_)
            if u64::from(saved.abs_diff(here)) * 1_000_000
                <= u64::from(here) * TSC_TOLERANCE_PPM =>
        {
            log::warn!(
                "vcpu{}: TSC {saved} kHz in the snapshot, {here} kHz here and KVM cannot \
                 scale it: keeping this host's rate",
                c.0
            );
            Ok(())
        }
        Err(source) => Err(VcpuStateError::TscFrequency {
            vcpu: c.0,
            saved,
            here,
            source,
        }),
    }
}

fn write_msrs(fd: &VcpuFd, c: &Ctx, msrs: &[kvm_msr_entry]) -> Result<(), VcpuStateError> {
    for batch in msrs.chunks(KVM_MAX_MSR_ENTRIES) {
        let wrapped = Msrs::from_entries(batch).map_err(c.fam())?;
        let set = fd.set_msrs(&wrapped).map_err(c.ioctl("KVM_SET_MSRS"))?;
        if set < batch.len() {
            return Err(VcpuStateError::MsrRefused {
                vcpu: c.0,
                index: batch[set].index,
            });
        }
    }
    Ok(())
}

/// Restores into a vCPU just created with the same id. The LAPIC comes after the
/// special registers (its base is an MSR in them), MSRs after the LAPIC (the
/// TSC-deadline MSR needs it), events last.
pub fn restore(fd: &VcpuFd, s: &VcpuState) -> Result<(), VcpuStateError> {
    let c = Ctx(s.id);
    let cpuid = CpuId::from_entries(&s.cpuid).map_err(c.fam())?;
    fd.set_cpuid2(&cpuid).map_err(c.ioctl("KVM_SET_CPUID2"))?;
    restore_tsc_khz(fd, &c, s.tsc_khz)?;
    fd.set_mp_state(s.mp_state)
        .map_err(c.ioctl("KVM_SET_MP_STATE"))?;
    fd.set_regs(&s.regs).map_err(c.ioctl("KVM_SET_REGS"))?;
    fd.set_sregs(&s.sregs).map_err(c.ioctl("KVM_SET_SREGS"))?;
    // SAFETY: `kvm_xsave` is the fixed 4 KiB legacy layout and this VMM never enables
    // KVM_CAP_XSAVE2, so KVM_SET_XSAVE reads exactly that structure and nothing past it.
    unsafe { fd.set_xsave(&s.xsave) }.map_err(c.ioctl("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&s.xcrs).map_err(c.ioctl("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&s.debug_regs)
        .map_err(c.ioctl("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&s.lapic).map_err(c.ioctl("KVM_SET_LAPIC"))?;
    write_msrs(fd, &c, &s.msrs)?;
    fd.set_vcpu_events(&s.events)
        .map_err(c.ioctl("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}
