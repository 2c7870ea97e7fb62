//! Assembles a VM from a [`VmConfig`]: memory, kernel, devices, boot state, vCPUs.

use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::cpuid::{self, CpuidOptions};
use crate::arch::x86_64::layout::*;
use crate::arch::x86_64::{mptable, regs, xsave_probe};
use crate::boot::cmdline::{self, CmdlineSpec, MmioSlot, DEFAULT_CMDLINE};
use crate::boot::loader::{self, LoadedKernel};
use crate::boot::params::{self, InitrdInfo};
use crate::config::{DriveBacking, DriveConfig, SerialOutConfig, VmConfig, XsaveMode};
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::serial::SerialSnapshot;
use crate::devices::legacy::{boot_timer::BootTimer, i8042::I8042, serial};
use crate::devices::virtio::block::{Block, BlockError};
use crate::devices::virtio::mmio::{transport::NOTIFY_OFFSET, MmioInterrupt, MmioTransport};
use crate::devices::virtio::vsock::{Vsock, VsockMetrics};
use crate::devices::virtio::{GuestMemory, VirtioDevice};
use crate::devices::EventFdTrigger;
use crate::exit::ExitNotifier;
use crate::exit_watcher::ExitWatcher;
use crate::snapshot::{SnapshotError, SnapshotSetup};
use crate::vstate::vcpu::{Vcpu, VcpuShared};
use crate::vstate::{memory, vcpu, vm};

mod devices;
pub(crate) use devices::assemble;

pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    #[error("cannot read initrd {path}: {source}")]
    Initrd {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("initrd of {0} bytes does not fit in guest memory above the kernel")]
    InitrdTooLarge(u64),
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    #[error(transparent)]
    Block(#[from] crate::devices::virtio::block::BlockError),
    #[error("vsock device: {0}")]
    Vsock(String),
    #[error("too many virtio devices (IRQs {VIRTIO_IRQ_BASE}..={VIRTIO_IRQ_MAX})")]
    TooManyDevices,
    #[error(transparent)]
    Bus(#[from] crate::devices::bus::BusError),
    #[error(transparent)]
    Transport(#[from] crate::devices::virtio::mmio::transport::TransportError),
    #[error("registering irqfd for GSI {gsi}: {source}")]
    Irqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("registering ioeventfd at {addr:#x}: {source}")]
    Ioeventfd {
        addr: u64,
        source: kvm_ioctls::Error,
    },
    #[error("KVM_GET_SUPPORTED_CPUID: {0}")]
    Cpuid(kvm_ioctls::Error),
    #[error("serial output {path}: {source}")]
    SerialOut {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("metrics file {path}: {source}")]
    MetricsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("event loop: {0}")]
    EventManager(#[from] event_manager::Error),
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error("writing boot state to guest memory: {0}")]
    BootMemory(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A VM ready to run.
pub struct Vmm {
    pub event_manager: EventManager<Subscriber>,
    pub exit: Arc<ExitNotifier>,
    pub vcpus: Vec<Vcpu>,
    pub serial: Arc<Mutex<serial::SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub blocks: Vec<Arc<Mutex<Block>>>,
    /// Every virtio device's transport, in attach order (what a snapshot saves).
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    /// The vsock device's counters, when one is attached.
    pub vsock_metrics: Option<Arc<VsockMetrics>>,
    /// `--metrics-path`, opened before seccomp so that exit only needs write(2).
    pub metrics_out: Option<File>,
    /// Set with `--snapshot-state`: the files, the vCPUs' pause control, SIGUSR1's flag.
    pub snapshot: Option<SnapshotSetup>,
    pub cmdline: String,
    /// PVM host: the vCPUs may need their int3 workaround (and its ioctls).
    pub pvm: bool,
    pub mem_mib: u64,
    pub(crate) vm: VmFd,
    pub(crate) mem: GuestMemory,
    // Kept alive for the life of the VM: dropping it would tear the VM down.
    _kvm: Kvm,
}

/// The KVM objects and guest memory a VM is built on.
pub(crate) struct VmCore {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub mem: GuestMemory,
    pub mem_mib: u64,
}

/// Devices, buses and event loop, the same for a booted and a restored VM.
pub(crate) struct Assembly {
    pub em: EventManager<Subscriber>,
    pub exit: Arc<ExitNotifier>,
    pub serial: Arc<Mutex<serial::SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub blocks: Vec<Arc<Mutex<Block>>>,
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    pub vsock_metrics: Option<Arc<VsockMetrics>>,
    pub metrics_out: Option<File>,
    pub snapshot: Option<SnapshotSetup>,
    pub slots: Vec<MmioSlot>,
    pub shared: VcpuShared,
}

impl Vmm {
    pub(crate) fn new(a: Assembly, core: VmCore, vcpus: Vec<Vcpu>, cmdline: String) -> Self {
        Self {
            event_manager: a.em,
            exit: a.exit,
            vcpus,
            serial: a.serial,
            i8042: a.i8042,
            blocks: a.blocks,
            transports: a.transports,
            vsock_metrics: a.vsock_metrics,
            metrics_out: a.metrics_out,
            snapshot: a.snapshot,
            cmdline,
            pvm: a.shared.pvm,
            mem_mib: core.mem_mib,
            vm: core.vm,
            mem: core.mem,
            _kvm: core.kvm,
        }
    }
}

fn load_initrd(
    mem: &GuestMemory,
    cfg: &VmConfig,
    kernel: &LoadedKernel,
) -> Result<Option<InitrdInfo>, BuildError> {
    let Some(path) = &cfg.initrd else {
        return Ok(None);
    };
    let err = |source| BuildError::Initrd {
        path: path.clone(),
        source,
    };
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(err)?;
    let size = data.len() as u64;
    let addr = params::initrd_addr(mem, kernel.kernel_end, size)
        .ok_or(BuildError::InitrdTooLarge(size))?;
    mem.write_slice(&data, addr)
        .map_err(|e| BuildError::BootMemory(e.to_string()))?;
    Ok(Some(InitrdInfo { addr, size }))
}

fn root_arg(cfg: &VmConfig) -> Option<String> {
    let root = cfg.drives.iter().find(|d| d.is_root)?;
    let mode = if root.read_only { "ro" } else { "rw" };
    Some(match &root.partuuid {
        Some(uuid) => format!("root=PARTUUID={uuid} {mode}"),
        None => format!("root=/dev/vda {mode}"),
    })
}

fn write_boot_state(
    mem: &GuestMemory,
    cfg: &VmConfig,
    kernel: &LoadedKernel,
    initrd: Option<InitrdInfo>,
    slots: &[MmioSlot],
    pvm: bool,
) -> Result<String, BuildError> {
    let c = cmdline::build(&CmdlineSpec {
        base: cfg.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE),
        root: root_arg(cfg),
        mmio: slots,
        pvm,
    })?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), &c)
        .map_err(|e| BuildError::BootMemory(format!("command line: {e}")))?;
    let line = c
        .as_cstring()
        .map_err(cmdline::CmdlineError::from)?
        .into_string()
        .unwrap_or_default();
    let bp = params::build_boot_params(mem, kernel.setup_header, line.len() + 1, initrd)
        .map_err(|e| BuildError::BootMemory(e.to_string()))?;
    params::write_boot_params(mem, bp).map_err(|e| BuildError::BootMemory(e.to_string()))?;
    mptable::setup_mptable(mem, cfg.vcpus).map_err(|e| BuildError::BootMemory(e.to_string()))?;
    regs::write_boot_tables(mem).map_err(|e| BuildError::BootMemory(e.to_string()))?;
    Ok(line)
}

/// Whether the guest can have XSAVE on this host (`--xsave`, probed for `auto`).
pub fn xsave_usable(
    kvm: &Kvm,
    supported: &kvm_bindings::CpuId,
    mode: XsaveMode,
    pvm: bool,
) -> bool {
    match mode {
        XsaveMode::On => true,
        XsaveMode::Off => false,
        // PVM already boots with `noxsave` on the command line.
        XsaveMode::Auto if pvm => true,
        XsaveMode::Auto => match xsave_probe::xcr0_tracked(kvm, supported) {
            Ok(tracked) => tracked,
            Err(e) => {
                log::warn!("xsave probe failed ({e}); leaving XSAVE on");
                true
            }
        },
    }
}

/// The CPUID table every vCPU starts from: KVM's supported one with the VMM's choices.
fn guest_cpuid(kvm: &Kvm, cfg: &VmConfig, pvm: bool) -> Result<kvm_bindings::CpuId, BuildError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(BuildError::Cpuid)?;
    let xsave = xsave_usable(kvm, &cpuid, cfg.xsave, pvm);
    if !xsave {
        log::warn!(
            "this host's KVM does not see the guest's XSETBV (nested under an emulator?): \
             the guest gets no XSAVE or AVX"
        );
    }
    let opts = CpuidOptions {
        tsc_deadline: kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
        xsave,
    };
    cpuid::normalize(&mut cpuid, opts, cpuid::host_brand());
    Ok(cpuid)
}

/// Builds everything; `signal_fd` comes from [`crate::exit_watcher::block_exit_signals`].
/// With `cfg.restore` the VM resumes from a snapshot instead ([`crate::snapshot::restore`]).
pub fn build(
    cfg: &VmConfig,
    signal_fd: std::os::fd::OwnedFd,
    pvm: bool,
) -> Result<Vmm, BuildError> {
    if let Some(r) = &cfg.restore {
        return crate::snapshot::restore(cfg, r, signal_fd, pvm);
    }
    // Memory and kernel first: bad images fail before /dev/kvm is touched.
    let mem = memory::create_guest_memory(cfg.mem_mib)?;
    let kernel = loader::load_kernel(&mem, &cfg.kernel)?;
    let initrd = load_initrd(&mem, cfg, &kernel)?;

    let (kvm, vm) = vm::create_vm(cfg.kvm_fd)?;
    memory::register_memory(&vm, &mem)?;
    let core = VmCore {
        kvm,
        vm,
        mem,
        mem_mib: cfg.mem_mib,
    };
    let a = assemble(cfg, &core, signal_fd, pvm, None)?;
    let line = write_boot_state(&core.mem, cfg, &kernel, initrd, &a.slots, pvm)?;
    log::info!("kernel command line: {line}");

    let supported = guest_cpuid(&core.kvm, cfg, pvm)?;
    let vcpus = (0..cfg.vcpus)
        .map(|id| {
            Vcpu::new(
                &core.vm,
                id,
                cfg.vcpus,
                &supported,
                kernel.entry.0,
                a.shared.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Vmm::new(a, core, vcpus, line))
}
