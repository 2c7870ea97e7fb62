//! One host's data plane: [`Host::start`] chooses the isolation, finds the VMM and guest
//! images, takes the run dir (lock, sweep of dead predecessors), and builds the
//! [`Worker`] with its sandbox backend and code supply. The embedded frontend and the
//! worker daemon start a host the same way.

pub mod lock;
pub mod sweep;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::code::cache::SealedCache;
use crate::code::image::ChunkFetch;
use crate::code::package::ZipLimits;
use crate::code::unpack::Unpacker;
use crate::code::CodeSource;
use crate::pool::CodeSupply;
use crate::sandbox::launcher::Launcher;
use crate::sandbox::microvm::{MicroVmBackend, MicroVmConfig};
use crate::sandbox::process::{ProcessBackend, ProcessConfig};
use crate::sandbox::select::{self, Isolation};
use crate::sandbox::session::Identity;
use crate::sandbox::Backend;
use crate::{Worker, WorkerConfig};
use lock::{DataDirLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{backend} backend: {reason}")]
    Backend {
        backend: &'static str,
        reason: String,
    },
    #[error("{what} not found at {path} ({hint})")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("run dir {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run dir: {0}")]
    RunDirLock(#[from] LockError),
    #[error("code cache: {0}")]
    CodeCache(#[from] crate::code::cache::CacheError),
    #[error("image chunk copies: {0}")]
    ChunkCopies(#[from] chunkstore::StoreError),
    #[error("sandbox code: {0}")]
    Code(#[from] crate::code::CodeError),
}

/// What an operator sets for a host's sandboxes (the supervisor's flags or config file
/// hold one).
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub isolation: Isolation,
    /// Our VMM binary [default: `vmm` beside the current executable].
    pub vmm_binary: Option<PathBuf>,
    /// Guest kernel [default: `vmlinux` in the images dir].
    pub kernel: Option<PathBuf>,
    /// Extra guest kernel command line (e.g. PVM workarounds).
    pub vm_cmdline: String,
    pub images_dir: PathBuf,
    /// Per-sandbox run directories [default: a fresh dir under the system temp dir].
    pub run_dir: Option<PathBuf>,
    pub idle_timeout: Duration,
    /// Maximum sandbox lifetime.
    pub lease: Duration,
    pub host_concurrency: u32,
    /// Bound on sandbox start plus the runtime's init.
    pub init_timeout: Duration,
    /// Turn on the cgroup2 mount's `favordynmods` if it is off (see
    /// [`crate::jail::dynmods`]): sandbox starts then never wait for RCU grace periods.
    pub favor_cgroup_dynmods: bool,
}

/// Everything a host needs to run sandboxes: the operator's [`HostConfig`] and what
/// the role running the host wires in.
#[derive(Clone)]
pub struct HostSettings {
    pub config: HostConfig,
    pub region: String,
    pub account_id: String,
    /// Per-function log files (rotated) go here.
    pub log_dir: Option<PathBuf>,
    /// Where the worker pulls the code it is told of by digest.
    pub code: Option<CodeSettings>,
    /// Where microVM SnapStart snapshots are sealed (see
    /// [`crate::sandbox::microvm::VaultSettings`]); `None`: under the run dir, for
    /// this process only.
    pub snapshot_vault: Option<crate::sandbox::microvm::VaultSettings>,
}

/// A host's code supply.
#[derive(Clone)]
pub struct CodeSettings {
    pub source: Arc<dyn CodeSource>,
    /// Keep fetched packages sealed, evicting beyond this many bytes (a worker host,
    /// whose source is another host); `None` for a source on this host that is already
    /// encrypted at rest (the embedded frontend's store).
    pub cache_max_bytes: Option<u64>,
    /// The chunk store container images are read from: the embedded frontend's own.
    /// `None` on a worker host, which keeps a copy under its run dir instead.
    pub chunks: Option<Arc<chunkstore::ChunkStore>>,
    /// Where a worker host copies the chunks of an image it has not seen from (the
    /// frontend that sent the invoke, over the link).
    pub chunk_fetch: Option<Arc<dyn ChunkFetch>>,
    /// A worker host keeps its chunk copies under this many bytes, evicting the least
    /// recently used (a microVM fetches an evicted chunk again when its guest reads it).
    pub chunk_copies_max_bytes: u64,
}

/// A started host: its worker plus what the frontend needs to know about it.
pub struct Host {
    pub worker: Worker,
    /// The one log line saying which isolation is used and why.
    pub selection: String,
    pub run_dir: PathBuf,
    /// The run dir was made for this process (and is removed at shutdown).
    pub owns_run_dir: bool,
    /// Held while this process lives, so a startup sweep elsewhere (even from another
    /// pid namespace) never takes this run dir for a dead supervisor's.
    _run_dir_lock: Option<DataDirLock>,
}

impl Host {
    /// Wraps an already constructed worker (embedding, tests with other backends).
    pub fn from_worker(worker: Worker, run_dir: PathBuf) -> Self {
        Self {
            worker,
            selection: "isolation: embedded worker".to_owned(),
            run_dir,
            owns_run_dir: false,
            _run_dir_lock: None,
        }
    }
}

fn require(what: &'static str, path: PathBuf, hint: &'static str) -> Result<PathBuf, HostError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(HostError::Missing { what, path, hint })
    }
}

fn launcher(cfg: &HostSettings) -> Result<Launcher, HostError> {
    const IMAGES_HINT: &str = "build the images or pass --images-dir / --kernel";
    let vmm = match &cfg.config.vmm_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("vmm")))
            .unwrap_or_else(|| PathBuf::from("vmm")),
    };
    let kernel = cfg
        .config
        .kernel
        .clone()
        .unwrap_or_else(|| cfg.config.images_dir.join("vmlinux"));
    Ok(Launcher {
        vmm: require("vmm binary", vmm, "build it or pass --vmm-binary")?,
        kernel: require("guest kernel", kernel, IMAGES_HINT)?,
    })
}

fn backend_err(backend: &'static str) -> impl Fn(crate::sandbox::SandboxError) -> HostError {
    move |e| HostError::Backend {
        backend,
        reason: e.to_string(),
    }
}

impl Host {
    /// Resolves `auto`, creates the backend, the code supply and the worker, and starts
    /// the reaper. Must run inside a Tokio runtime.
    pub fn start(cfg: &HostSettings) -> Result<Host, HostError> {
        let (isolation, selection) = select::resolve(cfg.config.isolation);
        let owns_run_dir = cfg.config.run_dir.is_none();
        let run_dir = cfg
            .config
            .run_dir
            .clone()
            .unwrap_or_else(sweep::default_run_dir);
        std::fs::create_dir_all(&run_dir).map_err(|source| HostError::RunDir {
            path: run_dir.clone(),
            source,
        })?;
        let run_dir_lock = if owns_run_dir {
            Some(DataDirLock::acquire(&run_dir)?)
        } else {
            None
        };
        if cfg.config.favor_cgroup_dynmods {
            eprintln!(
                "worker: {}",
                crate::jail::dynmods::favor_dynamic_modifications()
            );
        }
        let backend = make_backend(cfg, isolation, &run_dir);
        // After the backend started: it has killed and removed the sandbox cgroups of
        // dead workers, so nothing of theirs still runs from these dirs.
        sweep_temp_dir();
        let backend = backend?;
        let code = match &cfg.code {
            Some(c) => Some(code_supply(c, &run_dir)?),
            None => None,
        };
        let worker = Worker::with_code(backend, worker_config(cfg), code);
        // The reaper stops on its own once the worker is dropped.
        drop(worker.spawn_reaper());
        Ok(Host {
            worker,
            selection,
            run_dir,
            owns_run_dir,
            _run_dir_lock: run_dir_lock,
        })
    }
}

/// The cache (when asked for) and the unpacker under `run_dir`; code an earlier process
/// left there is removed.
fn code_supply(c: &CodeSettings, run_dir: &std::path::Path) -> Result<CodeSupply, HostError> {
    let cache = match c.cache_max_bytes {
        Some(max) => Some(Arc::new(SealedCache::open(
            &run_dir.join("code-cache"),
            max,
            c.source.clone(),
        )?)),
        None => None,
    };
    let unpacker = Unpacker::new(
        run_dir.join("sandbox-code"),
        crate::jail::mirror_group(),
        ZipLimits::default(),
    );
    unpacker.clear()?;
    let chunks = match (&c.chunks, &c.chunk_fetch) {
        (Some(own), _) => Some(own.clone()),
        (None, Some(_)) => Some(Arc::new(chunk_copies(run_dir, c.chunk_copies_max_bytes)?)),
        (None, None) => None,
    };
    Ok(CodeSupply {
        source: c.source.clone(),
        cache,
        unpacker,
        chunks,
        chunk_fetch: c.chunk_fetch.clone(),
    })
}

/// A worker host's copies of image chunks (sealed, as the frontend stores them), begun
/// afresh by each process and kept under `max_bytes`.
fn chunk_copies(
    run_dir: &std::path::Path,
    max_bytes: u64,
) -> Result<chunkstore::ChunkStore, HostError> {
    let dir = run_dir.join("chunk-copies");
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(HostError::RunDir {
                path: dir,
                source: e,
            })
        }
        _ => {}
    }
    Ok(chunkstore::ChunkStore::open_bounded(&dir, max_bytes)?)
}

fn worker_config(cfg: &HostSettings) -> WorkerConfig {
    WorkerConfig {
        host_concurrency: cfg.config.host_concurrency,
        idle_timeout: cfg.config.idle_timeout,
        lease: cfg.config.lease,
        init_timeout: cfg.config.init_timeout,
        reap_interval: (cfg.config.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5)),
        region: cfg.region.clone(),
        account_id: cfg.account_id.clone(),
        log_dir: cfg.log_dir.clone(),
        ..WorkerConfig::default()
    }
}

/// Creates the sandbox backend `isolation` names.
fn make_backend(
    cfg: &HostSettings,
    isolation: Isolation,
    run_dir: &std::path::Path,
) -> Result<Arc<dyn Backend>, HostError> {
    let identity = Identity {
        region: cfg.region.clone(),
        account_id: cfg.account_id.clone(),
    };
    Ok(match isolation {
        Isolation::MicroVm => {
            let mut mc = MicroVmConfig::from_images_dir(
                &cfg.config.images_dir,
                run_dir.to_owned(),
                launcher(cfg)?,
            );
            mc.identity = identity;
            mc.extra_cmdline = cfg.config.vm_cmdline.clone();
            mc.snapshot_vault = cfg.snapshot_vault.clone();
            let b = MicroVmBackend::new(mc).map_err(backend_err("microvm"))?;
            Arc::new(b)
        }
        // `resolve` never returns Auto; treat it as process to stay total.
        Isolation::Process | Isolation::Auto => {
            let mut pc = ProcessConfig::from_images_dir(&cfg.config.images_dir, run_dir.to_owned());
            pc.identity = identity;
            require(
                "guest-init binary",
                pc.guest_init.clone(),
                "build the images or set --images-dir / LAMBDA_IMAGES_DIR",
            )?;
            let b = ProcessBackend::new(pc).map_err(backend_err("process"))?;
            Arc::new(b)
        }
    })
}

/// Removes the temp-dir run dirs of supervisors that are gone (see [`sweep`]).
fn sweep_temp_dir() {
    let swept = sweep::sweep_stale_run_dirs(&std::env::temp_dir());
    if !swept.removed.is_empty() {
        tracing::info!(
            count = swept.removed.len(),
            "removed run dirs left by supervisors that are gone"
        );
    }
    for e in &swept.failed {
        tracing::warn!(error = %e, "could not remove a stale run dir");
    }
}
