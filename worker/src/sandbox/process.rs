//! The `process` backend: guest-init started as a jailed host process (namespaces,
//! pivot_root into the unpacked rootfs, code read-only at /var/task, cgroups, seccomp,
//! uid 993), speaking the wire protocol over a Unix socket bound into the jail.

use super::dir_guard::DirGuard;
use super::rootfs::RootfsMap;
use super::session::{function_arn, init_message, Identity, Session};
use super::stderr_tail::StderrTail;
use super::wire::WireConn;
use super::{stop_jailed, Backend, BoxFuture, LogLine, Reply, Sandbox, SandboxError};
use crate::jail::cpus::{vcpus_for_memory, CpuLease, CpuPlacer};
use crate::jail::{self, CgroupHost, CgroupLimits, JailCommand, JailConfig, JailedProcess, Stdio};
use crate::spec::{ChunkSink, FunctionVersionSpec, ImageAccess, InvokeRequest};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// Where guest-init finds the socket inside the jail. Top-level, because the jail's
/// root can only create entries in directories it owns (the overlay's root), not in
/// the rootfs's root-owned ones.
const SOCK_DIR_INSIDE: &str = "/.worker/sock";
const GUEST_INIT_INSIDE: &str = "/.worker/guest-init";

/// Host uid ranges the process and microVM backends lease from (about 1.07e9 ids).
pub const UID_SLOTS: u32 = 16384;

/// CPU share of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPolicy {
    /// Lambda's rule, one vCPU per 1769 MB, never below `floor_millicores`.
    Proportional {
        floor_millicores: u32,
    },
    Unlimited,
}

impl CpuPolicy {
    pub fn millicores(self, memory_mib: u32) -> Option<u32> {
        match self {
            CpuPolicy::Unlimited => None,
            CpuPolicy::Proportional { floor_millicores } => {
                let mc = u64::from(memory_mib) * 1000 / 1769;
                Some(u32::try_from(mc).unwrap_or(u32::MAX).max(floor_millicores))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Host path of the static guest-init binary.
    pub guest_init: PathBuf,
    /// Runtime → unpacked rootfs directory.
    pub rootfs: RootfsMap,
    /// Per-sandbox run directories and sockets go here (must be traversable, 0755).
    pub run_root: PathBuf,
    /// Host id range base for the jails' user namespaces (see `JailConfig::host_id_base`).
    pub host_id_base: u32,
    /// Where host uid ranges are leased (shared by every supervisor on the host).
    pub uid_lease_dir: PathBuf,
    /// cgroup directory name under the worker's own cgroup.
    pub cgroup_group: String,
    pub pids_max: u32,
    pub cpu: CpuPolicy,
    pub seccomp: bool,
    pub tmp_size_mib: u32,
    pub identity: Identity,
    /// Confine each sandbox to its vCPU share of host CPUs (see `jail::cpus`).
    pub place_cpus: bool,
}

impl ProcessConfig {
    /// Defaults for the images `image-build` writes to `images_dir`.
    pub fn from_images_dir(images_dir: &Path, run_root: PathBuf) -> Self {
        Self {
            guest_init: images_dir.join("guest-init"),
            rootfs: RootfsMap::from_images_dir(images_dir, false),
            run_root,
            host_id_base: 1_000_000,
            uid_lease_dir: PathBuf::from(jail::uids::DEFAULT_DIR),
            cgroup_group: "lambda-worker".into(),
            pids_max: 1024,
            cpu: CpuPolicy::Proportional {
                floor_millicores: 250,
            },
            seccomp: true,
            tmp_size_mib: 512,
            identity: Identity::default(),
            place_cpus: true,
        }
    }
}

pub struct ProcessBackend {
    cfg: ProcessConfig,
    cgroups: Option<Arc<CgroupHost>>,
    /// Host uid ranges, one leased per live sandbox.
    uids: jail::UidLeases,
    placer: CpuPlacer,
}

impl ProcessBackend {
    pub fn new(cfg: ProcessConfig) -> Result<Self, SandboxError> {
        jail::check_host().map_err(|e| SandboxError::Start(e.to_string()))?;
        let cgroups = CgroupHost::detect(&cfg.cgroup_group)
            .map_err(|e| SandboxError::Start(format!("cgroups: {e}")))?;
        std::fs::create_dir_all(&cfg.run_root)
            .and_then(|()| {
                // Traversable by the jails, not listable by other users of the host.
                std::fs::set_permissions(&cfg.run_root, std::fs::Permissions::from_mode(0o711))
            })
            .map_err(|e| {
                SandboxError::Start(format!("run root {}: {e}", cfg.run_root.display()))
            })?;
        remove_stale(&cgroups, &cfg.run_root);
        if !cfg.guest_init.is_file() {
            return Err(SandboxError::Start(format!(
                "guest-init binary {} not found",
                cfg.guest_init.display()
            )));
        }
        let uids = jail::UidLeases::new(&cfg.uid_lease_dir, cfg.host_id_base, UID_SLOTS)
            .map_err(|e| SandboxError::Start(e.to_string()))?;
        Ok(Self {
            cfg,
            uids,
            cgroups: Some(Arc::new(cgroups)),
            placer: CpuPlacer::from_own_affinity(),
        })
    }

    /// The directory guest-init's socket lives in (bind-mounted into the jail), and
    /// the listener on it.
    fn socket_dir(&self, id: &str) -> Result<(DirGuard, PathBuf, UnixListener), SandboxError> {
        let start_err = |m: String| SandboxError::Start(m);
        let sock_dir = self.cfg.run_root.join(format!("{id}.sock"));
        let _ = std::fs::remove_dir_all(&sock_dir);
        std::fs::create_dir(&sock_dir)
            .and_then(|()| {
                std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| start_err(format!("socket dir: {e}")))?;
        let cleanup = DirGuard(sock_dir.clone());
        let sock = sock_dir.join("wire.sock");
        let listener = UnixListener::bind(&sock)
            .map_err(|e| start_err(format!("bind {}: {e}", sock.display())))?;
        Ok((cleanup, sock, listener))
    }

    /// The jail's root and its `/var/task`: a container image's own root (which holds
    /// its code), or the runtime's rootfs with the unpacked package.
    fn root_and_code(
        &self,
        spec: &FunctionVersionSpec,
    ) -> Result<(PathBuf, Option<PathBuf>), SandboxError> {
        let start_err = |m: String| SandboxError::Start(m);
        if let Some(image) = &spec.image {
            return match image.ready.as_ref().map(|r| &r.access) {
                Some(ImageAccess::Mounted(root)) => Ok((root.clone(), None)),
                _ => Err(start_err(
                    "the container image was not mounted for this sandbox".into(),
                )),
            };
        }
        let rootfs = self
            .cfg
            .rootfs
            .get(&spec.runtime)
            .ok_or_else(|| start_err(format!("no rootfs for runtime {:?}", spec.runtime)))?
            .to_path_buf();
        let code = spec.code_dir.clone().ok_or_else(|| {
            start_err("the process backend needs an unpacked code directory".into())
        })?;
        Ok((rootfs, Some(code)))
    }

    /// The jail of one sandbox: the runtime's rootfs, the code, guest-init and its
    /// socket directory, under the host uid range `host_base`.
    fn jail_config(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        sock_dir: &Path,
        host_base: u32,
        cpus: Option<&CpuLease>,
    ) -> Result<JailConfig, SandboxError> {
        let (rootfs, code) = self.root_and_code(spec)?;
        let mut ro_binds = vec![
            (
                self.cfg.guest_init.clone(),
                PathBuf::from(GUEST_INIT_INSIDE),
            ),
            (sock_dir.to_path_buf(), PathBuf::from(SOCK_DIR_INSIDE)),
        ];
        if let Some(opt) = &spec.layers.dir {
            ro_binds.push((opt.clone(), PathBuf::from("/opt")));
        }
        Ok(JailConfig {
            rootfs: Some(rootfs),
            code,
            ro_binds,
            rw_binds: Vec::new(),
            devices: Vec::new(),
            run_dir: self.cfg.run_root.join(id),
            tmp_size_mib: self.cfg.tmp_size_mib,
            hostname: "localhost".into(),
            // guest-init runs as the jail's root (a host uid of its own range) with only
            // the capabilities to start and stop the function, which runs as
            // sbx_user1051: the function cannot trace it, read its memory or signal it.
            uid: 0,
            gid: 0,
            keep_caps: jail::AGENT_CAPS,
            host_id_base: host_base,
            limits: Some(CgroupLimits {
                memory_bytes: u64::from(spec.memory_mib) << 20,
                pids_max: self.cfg.pids_max,
                cpu_millicores: self.cfg.cpu.millicores(spec.memory_mib),
            }),
            seccomp: self.cfg.seccomp,
            loopback_up: true,
            // guest-init is PID 1 (`--jail-init`): no un-exec'd clone of the worker,
            // which holds its memory and command line, stays in the sandbox.
            reaper: false,
            cpus: cpus.map(|l| l.cpus().to_vec()).unwrap_or_default(),
        })
    }

    async fn start(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
    ) -> Result<ProcessSandbox, SandboxError> {
        let start_err = |m: String| SandboxError::Start(m);
        let began = std::time::Instant::now();
        let (cleanup, sock, listener) = self.socket_dir(id)?;
        let lease = self.uids.acquire().map_err(|e| start_err(e.to_string()))?;
        // Only guest-init (the jail's root) may connect.
        let (root_uid, root_gid) = (lease.host_base(), jail::host_gid(lease.host_base(), 0));
        std::os::unix::fs::chown(&sock, Some(root_uid), Some(root_gid))
            .and_then(|()| std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| start_err(format!("socket owner: {e}")))?;
        let cpus: Option<CpuLease> = if self.cfg.place_cpus {
            self.placer.lease(vcpus_for_memory(spec.memory_mib))
        } else {
            None
        };
        let jcfg = self.jail_config(spec, id, &cleanup.0, lease.host_base(), cpus.as_ref())?;
        let cmd = guest_init_command();
        let cgroups = self.cgroups.clone();
        // The lease moves with the spawn: if this start is abandoned (its timeout) while
        // the blocking task still runs, the jail it makes still holds its range.
        let mut proc = tokio::task::spawn_blocking(move || {
            jail::spawn(&jcfg, cmd, cgroups.as_deref()).map(|mut p| {
                p.hold_uid_lease(lease);
                p
            })
        })
        .await
        .map_err(|e| start_err(format!("spawn task: {e}")))?
        .map_err(|e| start_err(e.to_string()))?;
        let spawned = began.elapsed();
        let tail = StderrTail::spawn(proc.take_stderr());
        let stream = tokio::select! {
            r = listener.accept() => r.map_err(|e| start_err(format!("accept: {e}")))?.0,
            exit = proc.wait() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Err(start_err(format!(
                    "guest-init exited before connecting ({}): {}",
                    exit.map_or_else(|e| e.to_string(), |x| x.unreaped().to_string()),
                    tail.text()
                )));
            }
        };
        drop(listener);
        let connected = began.elapsed();
        let conn = WireConn::handshake(stream)
            .await
            .map_err(|e| start_err(format!("handshake: {e}: {}", tail.text())))?;
        let session = Session::new(
            conn,
            init_message(spec, &self.cfg.identity, id),
            function_arn(spec, &self.cfg.identity),
        );
        Ok(ProcessSandbox {
            session,
            proc: Some(proc),
            _sock_dir: cleanup,
            _stderr: tail,
            _cpus: cpus,
            timeline: (spawned, connected),
        })
    }
}

/// guest-init as the jail's PID 1, told which user runs the function and where
/// the worker listens.
fn guest_init_command() -> JailCommand {
    JailCommand {
        exe: PathBuf::from(GUEST_INIT_INSIDE),
        args: vec![
            "--jail-init".into(),
            "--runtime-user".into(),
            format!("{}:{}", jail::SANDBOX_UID, jail::SANDBOX_GID),
            "--host-uds".into(),
            format!("{SOCK_DIR_INSIDE}/wire.sock"),
        ],
        env: vec![(
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
        )],
        cwd: PathBuf::from("/"),
        stdout: Some(Stdio::Null),
        stderr: Some(Stdio::Pipe),
        fds: Vec::new(),
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
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

/// Cleans up after a worker that died without destroying its sandboxes: cgroups and
/// run files named after a process that no longer exists.
pub(crate) fn remove_stale(cgroups: &CgroupHost, run_root: &Path) {
    let n = cgroups.remove_stale();
    let mut files = 0;
    if let Ok(entries) = std::fs::read_dir(run_root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.split('.').next().unwrap_or_default();
            if crate::jail::cgroup::stale_owner(id) && std::fs::remove_dir_all(e.path()).is_ok() {
                files += 1;
            }
        }
    }
    if n + files > 0 {
        eprintln!("worker: removed {n} stale sandbox cgroups and {files} stale run entries");
    }
}

pub struct ProcessSandbox {
    session: Session,
    proc: Option<JailedProcess>,
    _sock_dir: DirGuard,
    _stderr: StderrTail,
    /// Returned to the placer when the sandbox goes.
    _cpus: Option<CpuLease>,
    /// Since the start began: jail spawned, guest-init connected.
    timeline: (Duration, Duration),
}

impl ProcessSandbox {
    /// One invoke (streamed to `chunks` when given), with a dead runtime's exit status
    /// in the error.
    async fn invoke_explained(
        &mut self,
        req: &InvokeRequest,
        deadline_ms: u64,
        chunks: Option<ChunkSink>,
    ) -> Result<Reply, SandboxError> {
        let result = match chunks {
            None => self.session.invoke(req, deadline_ms).await,
            Some(c) => self.session.invoke_streaming(req, deadline_ms, c).await,
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// Replaces the generic "connection closed" with the process's exit status.
    async fn explain(&mut self, err: SandboxError) -> SandboxError {
        let SandboxError::Exited {
            error_type,
            message,
        } = err
        else {
            return err;
        };
        if !message.contains("without providing a reason") {
            return SandboxError::Exited {
                error_type,
                message,
            };
        }
        let Some(proc) = self.proc.as_mut() else {
            return SandboxError::Exited {
                error_type,
                message,
            };
        };
        match tokio::time::timeout(Duration::from_millis(500), proc.wait()).await {
            Ok(Ok(exit)) => SandboxError::Exited {
                error_type,
                message: format!("Runtime exited with error: {}", exit.unreaped()),
            },
            _ => SandboxError::Exited {
                error_type,
                message,
            },
        }
    }
}

impl Sandbox for ProcessSandbox {
    fn start_details(&self) -> Option<String> {
        let (spawned, connected) = self.timeline;
        Some(format!(
            "jail spawned {:.1} ms, guest-init connected {:.1} ms",
            spawned.as_secs_f64() * 1000.0,
            connected.as_secs_f64() * 1000.0
        ))
    }

    fn init(&mut self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            match self.session.init().await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.explain(e).await),
            }
        })
    }

    fn invoke<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(self.invoke_explained(req, deadline_ms, None))
    }

    fn invoke_streaming<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
        chunks: ChunkSink,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(self.invoke_explained(req, deadline_ms, Some(chunks)))
    }

    fn set_log_sink(&mut self, sink: std::sync::Arc<dyn super::LogSink>) {
        self.session.set_log_sink(sink);
    }

    fn take_logs(&mut self) -> Vec<LogLine> {
        self.session.take_logs()
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        self.proc.as_ref()?.cgroup()?.memory_peak()
    }

    fn oom_killed(&self) -> bool {
        self.proc.as_ref().is_some_and(JailedProcess::oom_killed)
    }

    fn destroy(mut self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let proc = self.proc.take();
            stop_jailed(&mut self.session, proc, grace, Duration::from_millis(100)).await;
        })
    }
}
