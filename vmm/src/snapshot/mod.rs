//! Snapshots: a paused VM's vCPU, VM-wide and device state in a checksummed state file
//! (`format`), its memory in a second file (`memory_file`); taken on SIGUSR1 (`take`),
//! resumed in a new vmm process (`restore`).

pub mod format;
pub mod memory_file;
mod restore;
mod take;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

use crate::config::SnapshotConfig;
use crate::devices::legacy::i8042::I8042State;
use crate::devices::legacy::serial::{FifoTooLong, SerialSnapshot};
use crate::devices::virtio::mmio::transport::{TransportError, TransportState};
use crate::vstate::pause::{PauseControl, PauseError};
use crate::vstate::vcpu::SnapshotSupport;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::{VmState, VmStateError};

pub use format::FormatError;
pub use memory_file::MemoryFileError;
pub use restore::restore;
pub use take::take;

/// Everything a snapshot holds besides guest memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct MicroVmState {
    pub mem_mib: u64,
    /// BLAKE3 of the memory file.
    pub memory_blake3: [u8; 32],
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub serial: SerialSnapshot,
    pub i8042: I8042State,
    /// One per virtio device, in attach order (drives as configured, then vsock).
    pub virtio: Vec<TransportState>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Memory(#[from] MemoryFileError),
    #[error("pausing the vCPUs: {0}")]
    Pause(#[from] PauseError),
    #[error(transparent)]
    VmState(#[from] VmStateError),
    #[error(transparent)]
    Serial(#[from] FifoTooLong),
    #[error("the snapshot has {found} virtio devices, this configuration {expected}: give the same drives and vsock, in the same order")]
    DeviceCount { found: usize, expected: usize },
    #[error("virtio device {index}: {source}")]
    Transport {
        index: usize,
        source: TransportError,
    },
    #[error("the snapshot holds {0} vCPUs, or not numbered 0 to n-1 in order")]
    VcpuCount(usize),
    #[error("installing the vCPU kick signal handler: {0}")]
    KickHandler(std::io::Error),
    #[error("KVM_GET_MSR_INDEX_LIST: {0}")]
    MsrList(kvm_ioctls::Error),
}

/// Device locks, taken while the vCPUs are paused: a poisoned one still holds the
/// state to save or restore.
fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SnapshotError {
    fn file(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| SnapshotError::File { what, path, source }
    }
}

/// What a VM that may be snapshotted holds from its start: both files (opened before
/// seccomp, written only on SIGUSR1), the vCPUs' pause control, and SIGUSR1's flag.
pub struct SnapshotSetup {
    pub state: File,
    pub state_path: PathBuf,
    pub mem: File,
    pub exit_after: bool,
    pub pause: Arc<PauseControl>,
    /// Raised by the exit watcher on SIGUSR1, taken by the run loop.
    pub requested: Arc<AtomicBool>,
    msr_indices: Arc<Vec<u32>>,
}

fn open_for_write(what: &'static str, path: &Path) -> Result<File, SnapshotError> {
    // Not truncated here: the file may be the very snapshot this VM was restored from.
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(SnapshotError::file(what, path))
}

impl SnapshotSetup {
    pub fn open(cfg: &SnapshotConfig, kvm: &Kvm) -> Result<Self, SnapshotError> {
        let msr_indices = kvm
            .get_msr_index_list()
            .map_err(SnapshotError::MsrList)?
            .as_slice()
            .to_vec();
        crate::vstate::pause::install_kick_handler().map_err(SnapshotError::KickHandler)?;
        Ok(Self {
            state: open_for_write("snapshot state", &cfg.state)?,
            state_path: cfg.state.clone(),
            mem: open_for_write("snapshot memory", &cfg.mem)?,
            exit_after: cfg.exit_after,
            pause: Arc::new(PauseControl::default()),
            requested: Arc::new(AtomicBool::new(false)),
            msr_indices: Arc::new(msr_indices),
        })
    }

    pub fn vcpu_support(&self) -> SnapshotSupport {
        SnapshotSupport {
            pause: self.pause.clone(),
            msr_indices: self.msr_indices.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
