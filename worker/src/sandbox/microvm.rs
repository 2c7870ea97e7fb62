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
mod snapshots;
mod snapstart;
mod vm_sandbox;
use kvm::{hold_a_vm, open_kvm};
use snapshots::{Snapshot, SnapshotStore};
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
    snapshots: SnapshotStore,
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

/// How a sandbox's VM starts.
enum Launch<'a> {
    Boot,
    /// Booted to be snapshotted after Init (the first cold start of a SnapStart version).
    BootForSnapshot,
    /// Resumed from the version's snapshot.
    Restore(&'a Snapshot),
}

/// A sandbox's own files on the host: removed with `dir` when the sandbox goes.
struct SandboxFiles {
    dir: DirGuard,
    /// None for a container image, which the monitor reads through its chunk link.
    code_image: Option<PathBuf>,
    opt_image: Option<PathBuf>,
}

/// A new, empty host folder for sandbox `id`, with its socket subfolder.
fn files_dir(run_root: &Path, id: &str) -> Result<DirGuard, SandboxError> {
    let files = DirGuard(run_root.join(format!("{id}.files")));
    let _ = std::fs::remove_dir_all(&files.0);
    std::fs::create_dir_all(files.0.join("sock"))
        .map_err(|e| start_err(format!("sandbox dir: {e}")))?;
    // The jail binds the code image and socket dir as its root (group JAIL_ROOT_GID);
    // other host users, who may learn the id from the jail's mountinfo, cannot
    // traverse to the code or the guest's socket.
    chown(&files.0, 0, jail::JAIL_ROOT_GID)?;
    chmod(&files.0, 0o710)?;
    Ok(files)
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
        let snapshots = SnapshotStore::new(&cfg.run_root)
            .map_err(|e| start_err(format!("snapshot store: {e}")))?;
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
            snapshots,
            _held_vm: held_vm,
        })
    }

    /// The sandbox's host directory (vsock socket dir, a code image built from a code
    /// directory when the function has no image, an image of its merged layers).
    async fn sandbox_files(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
    ) -> Result<SandboxFiles, SandboxError> {
        let files = files_dir(&self.cfg.run_root, id)?;
        let code_image = match (&spec.image, &spec.code_image, &spec.code_dir) {
            (Some(_), _, _) => None,
            (None, Some(img), _) => Some(img.clone()),
            (None, None, Some(dir)) => {
                Some(code_image::image_of(dir, files.0.join("code.ext4")).await?)
            }
            (None, None, None) => return Err(start_err("function has no code")),
        };
        let opt_image = match &spec.layers.dir {
            Some(dir) => Some(code_image::image_of(dir, files.0.join("opt.ext4")).await?),
            None => None,
        };
        Ok(SandboxFiles {
            dir: files,
            code_image,
            opt_image,
        })
    }

    /// Read-only files the VMM sees in its jail: a restored VM gets its snapshot's
    /// files instead of the kernel.
    fn binds(
        &self,
        rootfs: PathBuf,
        files: &SandboxFiles,
        how: &Launch<'_>,
    ) -> Vec<(PathBuf, PathBuf)> {
        let l = &self.cfg.launcher;
        let mut ro_binds = vec![
            (l.vmm.clone(), PathBuf::from(launcher::VMM)),
            (rootfs, PathBuf::from(launcher::ROOTFS)),
        ];
        match how {
            Launch::Restore(snap) => ro_binds.extend([
                (snap.state.clone(), PathBuf::from(launcher::SNAPSHOT_STATE)),
                (snap.mem.clone(), PathBuf::from(launcher::SNAPSHOT_MEM)),
            ]),
            _ => ro_binds.push((l.kernel.clone(), PathBuf::from(launcher::KERNEL))),
        }
        if let Some(code) = &files.code_image {
            ro_binds.push((code.clone(), PathBuf::from(launcher::CODE)));
        }
        if let Some(opt) = &files.opt_image {
            ro_binds.push((opt.clone(), PathBuf::from(launcher::OPT)));
        }
        if self.vmm_is_dynamic {
            ro_binds.push((PathBuf::from("/usr"), PathBuf::from("/usr")));
        }
        ro_binds
    }

    fn jail_config(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        ro_binds: Vec<(PathBuf, PathBuf)>,
        rw_binds: Vec<(PathBuf, PathBuf)>,
        host_id_base: u32,
        cpus: &Option<CpuLease>,
    ) -> JailConfig {
        JailConfig {
            rootfs: None,
            code: None,
            ro_binds,
            rw_binds,
            devices: Vec::new(),
            run_dir: self.cfg.run_root.join(id),
            tmp_size_mib: 16,
            hostname: id.to_string(),
            uid: jail::SANDBOX_UID,
            gid: jail::SANDBOX_UID,
            keep_caps: 0,
            host_id_base,
            limits: Some(CgroupLimits {
                memory_bytes: u64::from(spec.memory_mib + self.cfg.monitor_overhead_mib) << 20,
                pids_max: 256,
                cpu_millicores: None,
            }),
            seccomp: self.cfg.seccomp,
            loopback_up: false,
            // The VMM is PID 1 of its jail: nothing of the worker (a clone that never
            // execs) stays in the sandbox. It forks nothing, so nothing needs reaping.
            reaper: false,
            cpus: cpus.as_ref().map(|l| l.cpus().to_vec()).unwrap_or_default(),
        }
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

    /// The VMM's arguments for `how`.
    fn vmm_args(
        &self,
        spec: &FunctionVersionSpec,
        files: &SandboxFiles,
        how: &Launch<'_>,
        image: bool,
    ) -> Vec<String> {
        let shape = VmShape {
            mem_mib: spec.memory_mib,
            vcpus: self.cfg.vcpus,
            extra_cmdline: self.cfg.extra_cmdline.clone(),
            opt_drive: files.opt_image.is_some(),
            image_drive: image,
        };
        let l = &self.cfg.launcher;
        let mut args = match how {
            Launch::Boot => l.args(&shape),
            Launch::BootForSnapshot => l.snapshot_args(&shape),
            // The probed flags choose what the guest boots with; a restore has it.
            Launch::Restore(_) => return l.restore_args(&shape),
        };
        args.extend(self.probed_flags.iter().cloned());
        args
    }

    /// Starts a sandbox's VM: booted, booted to be snapshotted, or restored.
    async fn launch(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        how: &Launch<'_>,
    ) -> Result<VmSandbox, SandboxError> {
        let t0 = Instant::now();
        let image = image_link::lazy_image(spec)?;
        let rootfs = self.rootfs_for(spec, image.is_some())?;
        let files = match how {
            Launch::Restore(snap) => snapstart::restore_files(&self.cfg.run_root, id, snap)?,
            _ => self.sandbox_files(spec, id).await?,
        };
        let (image_link, image_fd) = match image {
            Some(image) => {
                let (link, fd) = image_link::start(image, id)?;
                (Some(link), Some((fd, launcher::IMAGE_FD)))
            }
            None => (None, None),
        };
        let lease = self.uids.acquire().map_err(|e| start_err(e.to_string()))?;
        let id_base = lease.host_base();
        let sock_dir = files.dir.0.join("sock");
        let sandbox_owned = |dir: &Path| {
            chown(
                dir,
                id_base + jail::SANDBOX_UID,
                jail::host_gid(id_base, jail::SANDBOX_UID),
            )
        };
        sandbox_owned(&sock_dir)?;
        let mut rw_binds = vec![(sock_dir.clone(), PathBuf::from(launcher::VSOCK_DIR))];
        let snapshot_out = match how {
            Launch::BootForSnapshot => {
                let out = self
                    .snapshots
                    .scratch(id)
                    .map_err(|e| start_err(format!("snapshot folder: {e}")))?;
                sandbox_owned(&out.0)?;
                rw_binds.push((out.0.clone(), PathBuf::from(launcher::SNAPSHOT_DIR)));
                Some(out)
            }
            _ => None,
        };
        // guest-init's connection arrives here: listen before the VM starts.
        let guest_sock = sock_dir.join(format!("vm.vsock_{GUEST_PORT}"));
        let listener =
            UnixListener::bind(&guest_sock).map_err(|e| start_err(format!("bind: {e}")))?;
        chmod(&guest_sock, 0o777)?;
        let args = self.vmm_args(spec, &files, how, image_fd.is_some());
        let cpus = self
            .cfg
            .place_cpus
            .then(|| self.placer.lease(self.cfg.vcpus as usize))
            .flatten();
        let binds = self.binds(rootfs, &files, how);
        let jcfg = self.jail_config(spec, id, binds, rw_binds, id_base, &cpus);
        let cmd = JailCommand {
            exe: PathBuf::from(launcher::VMM),
            args,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            stdout: Some(Stdio::Pipe),
            stderr: Some(Stdio::Pipe),
            fds: std::iter::once((open_kvm()?, launcher::KVM_FD))
                .chain(image_fd)
                .collect(),
        };
        let mut proc = spawn_jailed(jcfg, cmd, self.cgroups.clone(), lease).await?;
        let spawned = t0.elapsed();
        let serial = StderrTail::spawn(proc.take_stdout());
        let stderr = StderrTail::spawn(proc.take_stderr());
        // A restored guest only reconnects: if it does not, say why instead of waiting
        // out the whole start deadline.
        let patience = matches!(how, Launch::Restore(_)).then_some(RESTORE_CONNECT_TIMEOUT);
        let stream = await_guest(listener, &mut proc, (&serial, &stderr), patience).await?;
        let connected = t0.elapsed();
        let conn = WireConn::handshake(stream)
            .await
            .map_err(|e| start_err(format!("handshake: {e}: {}", serial.text())))?;
        let mut init = init_message(spec, &self.cfg.identity, id);
        let arn = function_arn(spec, &self.cfg.identity);
        let session = match how {
            Launch::Restore(_) => Session::restored(conn, init, arn),
            Launch::BootForSnapshot => {
                init.initialization_type = "snap-start".into();
                Session::new(conn, init, arn)
            }
            Launch::Boot => Session::new(conn, init, arn),
        };
        Ok(VmSandbox {
            session,
            proc: Some(proc),
            memory_mib: spec.memory_mib,
            images: (files.code_image.clone(), files.opt_image.clone()),
            snapshot_out,
            _files: files.dir,
            serial,
            stderr,
            timeline: (spawned, connected),
            _cpus: cpus,
            _image_link: image_link,
        })
    }
}

/// Starts the jailed VMM on a blocking thread; the uid lease moves with it (see the
/// process backend).
async fn spawn_jailed(
    jcfg: JailConfig,
    cmd: JailCommand,
    cgroups: Arc<CgroupHost>,
    lease: jail::uids::UidLease,
) -> Result<JailedProcess, SandboxError> {
    tokio::task::spawn_blocking(move || {
        jail::spawn(&jcfg, cmd, Some(&cgroups)).map(|mut p| {
            p.hold_uid_lease(lease);
            p
        })
    })
    .await
    .map_err(|e| start_err(e.to_string()))?
    .map_err(|e| start_err(e.to_string()))
}

/// How long a VM resumed from a snapshot gets to reconnect.
const RESTORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits (at most `patience`, if given) for guest-init's vsock connection, or explains
/// why the VMM died first.
async fn await_guest(
    listener: UnixListener,
    proc: &mut JailedProcess,
    (serial, stderr): (&StderrTail, &StderrTail),
    patience: Option<Duration>,
) -> Result<tokio::net::UnixStream, SandboxError> {
    let waited = patience.unwrap_or(Duration::MAX);
    tokio::select! {
        _ = tokio::time::sleep(waited) => Err(start_err(format!(
            "guest-init did not connect within {waited:?}: {} {}",
            stderr.text(),
            serial.text(),
        ))),
        r = listener.accept() => Ok(r.map_err(|e| start_err(format!("accept: {e}")))?.0),
        exit = proc.wait() => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(start_err(format!(
                "vmm exited before guest-init connected ({}): {} {}",
                exit.map_or_else(|e| e.to_string(), |x| x.unreaped().to_string()),
                stderr.text(),
                serial.text(),
            )))
        }
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
