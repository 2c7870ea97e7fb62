//! The `microvm` backend: one `vmm` process per sandbox, jailed (namespaces,
//! pivot_root into a tmpfs holding only the static VMM, the kernel,
//! rootfs and code images, cgroup limits, unprivileged uid), with guest-init reached
//! over hybrid vsock: it connects to CID 2 port 9000, which lands on `<uds>_9000`.

use super::dir_guard::DirGuard;
use super::launcher::{self, Launcher, VmShape};
use super::rootfs::RootfsMap;
use super::session::{function_arn, init_message, Identity, Session};
use super::stderr_tail::StderrTail;
use super::wire::WireConn;
use super::{Backend, BoxFuture, Sandbox, SandboxError};
use crate::jail::cpus::{CpuLease, CpuPlacer};
use crate::jail::{self, CgroupHost, CgroupLimits, JailCommand, JailConfig, JailedProcess, Stdio};
use crate::spec::FunctionVersionSpec;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

mod code_image;
mod image_link;
mod kvm;
mod launch;
mod snapshots;
mod snapstart;
mod vm_sandbox;
use kvm::{hold_a_vm, open_kvm};
use launch::{files_dir, Launch, SandboxFiles};
use snapshots::{Snapshot, SnapshotStore};
pub use snapshots::{VaultBounds, VaultSettings, DEFAULT_VAULT_BYTES};
use vm_sandbox::VmSandbox;
mod probe;

/// guest-init's default vsock port (`runtime_api::protocol::DEFAULT_VSOCK_PORT`).
const GUEST_PORT: u32 = runtime_api::protocol::DEFAULT_VSOCK_PORT;

#[derive(Debug, Clone)]
pub struct MicroVmConfig {
    pub launcher: Launcher,
    /// Runtime → rootfs ext4 image.
    pub rootfs_images: RootfsMap,
    pub run_root: PathBuf,
    /// Host id range base for the jails' user namespaces (see `JailConfig::host_id_base`).
    pub host_id_base: u32,
    /// Where host uid ranges are leased (shared by every supervisor on the host).
    pub uid_lease_dir: PathBuf,
    pub cgroup_group: String,
    pub vcpus: u32,
    /// Memory the monitor itself may use on top of the guest's.
    pub monitor_overhead_mib: u32,
    /// Appended to the kernel command line (e.g. PVM workarounds).
    pub extra_cmdline: String,
    pub seccomp: bool,
    pub identity: Identity,
    /// Confine each monitor to `vcpus` host CPUs (see `jail::cpus`).
    pub place_cpus: bool,
    /// Where SnapStart snapshots are sealed; `None`: under `run_root`, with a key of
    /// this process (they go with it).
    pub snapshot_vault: Option<VaultSettings>,
}

impl MicroVmConfig {
    pub fn from_images_dir(images_dir: &Path, run_root: PathBuf, launcher: Launcher) -> Self {
        Self {
            rootfs_images: RootfsMap::from_images_dir(images_dir, true),
            run_root,
            host_id_base: 1_000_000,
            uid_lease_dir: PathBuf::from(jail::uids::DEFAULT_DIR),
            cgroup_group: "lambda-worker".into(),
            vcpus: 1,
            monitor_overhead_mib: 256,
            extra_cmdline: String::new(),
            seccomp: true,
            identity: Identity::default(),
            place_cpus: true,
            snapshot_vault: None,
            launcher,
        }
    }
}

pub struct MicroVmBackend {
    cfg: MicroVmConfig,
    /// Flags from probing the host once (`vmm --probe-host`), added to every launch.
    probed_flags: Vec<String>,
    /// A dynamically linked VMM needs the host's /usr (merged-/usr hosts only); the
    /// static build needs nothing but itself.
    vmm_is_dynamic: bool,
    cgroups: Arc<CgroupHost>,
    /// Host uid ranges, one leased per live sandbox.
    uids: jail::UidLeases,
    placer: CpuPlacer,
    /// SnapStart snapshots taken on this host.
    snapshots: Arc<SnapshotStore>,
    /// See [`hold_a_vm`].
    _held_vm: Option<std::os::fd::OwnedFd>,
}

fn start_err(m: impl Into<String>) -> SandboxError {
    SandboxError::Start(m.into())
}

fn chmod(p: &Path, mode: u32) -> Result<(), SandboxError> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| start_err(format!("chmod {}: {e}", p.display())))
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .map_err(|e| start_err(format!("chown {}: {e}", p.display())))
}

impl MicroVmBackend {
    pub fn new(cfg: MicroVmConfig) -> Result<Self, SandboxError> {
        let l = &cfg.launcher;
        if let Some(missing) = [&l.vmm, &l.kernel].into_iter().find(|p| !p.is_file()) {
            return Err(start_err(format!(
                "microVM: {} not found",
                missing.display()
            )));
        }
        jail::check_host().map_err(|e| start_err(e.to_string()))?;
        let cgroups = CgroupHost::detect(&cfg.cgroup_group)
            .map_err(|e| start_err(format!("cgroups: {e}")))?;
        std::fs::create_dir_all(&cfg.run_root).map_err(|e| start_err(format!("run root: {e}")))?;
        // Traversable by the jails, not listable: sandbox ids and code mirror names
        // stay unknown to other users of the host.
        chmod(&cfg.run_root, 0o711)?;
        super::process::remove_stale(&cgroups, &cfg.run_root);
        let uids = jail::UidLeases::new(
            &cfg.uid_lease_dir,
            cfg.host_id_base,
            super::process::UID_SLOTS,
        )
        .map_err(|e| start_err(e.to_string()))?;
        let probed_flags = probe::probe_host(&cfg.launcher.vmm);
        let vmm_is_dynamic = launcher::is_dynamic_elf(&cfg.launcher.vmm)
            .map_err(|e| start_err(format!("{}: {e}", cfg.launcher.vmm.display())))?;
        if vmm_is_dynamic {
            eprintln!(
                "worker: {} is dynamically linked: every microVM jail gets the host's /usr \
                 (the static musl build needs nothing)",
                cfg.launcher.vmm.display()
            );
        }
        let snapshots = SnapshotStore::new(&cfg.run_root, cfg.snapshot_vault.as_ref())
            .map_err(|e| start_err(format!("snapshot store: {e}")))?;
        if let Some((held, bytes)) = snapshots.vault_held().filter(|(n, _)| *n > 0) {
            eprintln!(
                "worker: SnapStart vault holds {held} snapshot(s), {} MiB sealed",
                bytes >> 20
            );
        }
        let held_vm = hold_a_vm()
            .inspect_err(|e| eprintln!("worker: not holding an idle KVM VM: {e}"))
            .ok();
        Ok(Self {
            cfg,
            probed_flags,
            vmm_is_dynamic,
            cgroups: Arc::new(cgroups),
            uids,
            placer: CpuPlacer::from_own_affinity(),
            snapshots: Arc::new(snapshots),
            _held_vm: held_vm,
        })
    }

    /// The guest's root file system: its runtime's, or for a container image (which
    /// becomes the root) the smallest, which only starts guest-init.
    fn rootfs_for(&self, spec: &FunctionVersionSpec, image: bool) -> Result<PathBuf, SandboxError> {
        let runtime = if image {
            "provided"
        } else {
            spec.runtime.as_str()
        };
        self.cfg
            .rootfs_images
            .get(runtime)
            .map(Path::to_path_buf)
            .ok_or_else(|| start_err(format!("no rootfs image for runtime {runtime:?}")))
    }

    async fn start(&self, spec: &FunctionVersionSpec, id: &str) -> Result<VmSandbox, SandboxError> {
        if spec.snap_start {
            if let Some(sb) = self.start_from_snapshot(spec, id).await {
                return Ok(sb);
            }
        }
        self.launch(spec, id, &Launch::Boot).await
    }
}

impl Backend for MicroVmBackend {
    fn name(&self) -> &'static str {
        "microvm"
    }

    fn reads_images_lazily(&self) -> bool {
        true
    }

    fn forget(&self, name: &str, version: Option<&str>) {
        self.snapshots.forget_function(name, version);
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a FunctionVersionSpec,
    ) -> BoxFuture<'a, Option<crate::sandbox::SnapshotInit>> {
        Box::pin(async move {
            if !spec.snap_start {
                return None;
            }
            self.prepare_snapshot(spec).await
        })
    }

    fn create<'a>(
        &'a self,
        spec: &'a FunctionVersionSpec,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let sb: Box<dyn Sandbox> = Box::new(self.start(spec, id).await?);
            Ok(sb)
        })
    }
}
