//! Builds the [`Worker`] a supervisor drives from its data-plane settings.

use std::path::PathBuf;
use std::sync::Arc;

use worker::sandbox::launcher::Launcher;
use worker::sandbox::microvm::{MicroVmBackend, MicroVmConfig};
use worker::sandbox::process::{ProcessBackend, ProcessConfig};
use worker::sandbox::select::{self, Isolation};
use worker::sandbox::session::Identity;
use worker::sandbox::Backend;
use worker::{Worker, WorkerConfig};

use super::config::DataPlaneConfig;
use super::sweep;
use crate::datadir_lock::{DataDirLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
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
}

/// How the worker wants code handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeForm {
    /// Unpacked directory (process backend).
    Directory,
    /// Read-only ext4 image (microVM backend).
    Image,
}

/// A started worker plus what the frontend needs to know about it.
pub struct DataPlane {
    pub worker: Worker,
    pub code_form: CodeForm,
    /// The one log line saying which isolation is used and why.
    pub selection: String,
    pub run_dir: PathBuf,
    /// Group given the code mirror root under `run_dir` (the jails' root gid), or
    /// `None` to keep it private (see `invoke::expose`).
    pub code_group: Option<u32>,
    /// The run dir was made for this process (and is removed at shutdown).
    pub owns_run_dir: bool,
    /// Held while this process lives, so a startup sweep elsewhere (even from another
    /// pid namespace) never takes this run dir for a dead supervisor's.
    _run_dir_lock: Option<DataDirLock>,
}

impl DataPlane {
    /// Wraps an already constructed worker (embedding, tests with other backends).
    pub fn from_worker(worker: Worker, code_form: CodeForm, run_dir: PathBuf) -> Self {
        Self {
            worker,
            code_form,
            selection: "isolation: embedded worker".to_owned(),
            run_dir,
            code_group: worker::jail::mirror_group(),
            owns_run_dir: false,
            _run_dir_lock: None,
        }
    }
}

/// Everything the builder needs beyond [`DataPlaneConfig`].
pub struct BuildContext<'a> {
    pub config: &'a DataPlaneConfig,
    pub region: &'a str,
    pub account_id: &'a str,
    /// Per-function log files (rotated) go here.
    pub log_dir: PathBuf,
}

fn require(
    what: &'static str,
    path: PathBuf,
    hint: &'static str,
) -> Result<PathBuf, DataPlaneError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(DataPlaneError::Missing { what, path, hint })
    }
}

fn launcher(cfg: &DataPlaneConfig) -> Result<Launcher, DataPlaneError> {
    const IMAGES_HINT: &str = "build the images or pass --images-dir / --kernel";
    let vmm = match &cfg.vmm_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("vmm")))
            .unwrap_or_else(|| PathBuf::from("vmm")),
    };
    let kernel = cfg
        .kernel
        .clone()
        .unwrap_or_else(|| cfg.images_dir.join("vmlinux"));
    Ok(Launcher {
        vmm: require("vmm binary", vmm, "build it or pass --vmm-binary")?,
        kernel: require("guest kernel", kernel, IMAGES_HINT)?,
    })
}

fn backend_err(backend: &'static str) -> impl Fn(worker::sandbox::SandboxError) -> DataPlaneError {
    move |e| DataPlaneError::Backend {
        backend,
        reason: e.to_string(),
    }
}

/// Resolves `auto`, creates the backend and the worker, and starts its reaper.
/// Must run inside a Tokio runtime.
pub fn build(ctx: &BuildContext<'_>) -> Result<DataPlane, DataPlaneError> {
    let cfg = ctx.config;
    let (isolation, selection) = select::resolve(cfg.isolation);
    let owns_run_dir = cfg.run_dir.is_none();
    let run_dir = cfg.run_dir.clone().unwrap_or_else(sweep::default_run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|source| DataPlaneError::RunDir {
        path: run_dir.clone(),
        source,
    })?;
    let run_dir_lock = if owns_run_dir {
        Some(DataDirLock::acquire(&run_dir)?)
    } else {
        None
    };
    let backend = make_backend(ctx, isolation, &run_dir);
    // After the backend started: it has killed and removed the sandbox cgroups of dead
    // workers, so nothing of theirs still runs from these dirs.
    sweep_temp_dir();
    let (backend, code_form) = backend?;
    let wc = WorkerConfig {
        host_concurrency: cfg.host_concurrency,
        idle_timeout: cfg.idle_timeout,
        lease: cfg.lease,
        init_timeout: cfg.init_timeout,
        reap_interval: (cfg.idle_timeout / 4).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(5),
        ),
        region: ctx.region.to_owned(),
        account_id: ctx.account_id.to_owned(),
        log_dir: Some(ctx.log_dir.clone()),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(backend, wc);
    // The reaper stops on its own once the worker is dropped.
    drop(worker.spawn_reaper());
    Ok(DataPlane {
        worker,
        code_form,
        selection,
        run_dir,
        code_group: worker::jail::mirror_group(),
        owns_run_dir,
        _run_dir_lock: run_dir_lock,
    })
}

/// Creates the sandbox backend `isolation` names.
fn make_backend(
    ctx: &BuildContext<'_>,
    isolation: Isolation,
    run_dir: &std::path::Path,
) -> Result<(Arc<dyn Backend>, CodeForm), DataPlaneError> {
    let cfg = ctx.config;
    let identity = Identity {
        region: ctx.region.to_owned(),
        account_id: ctx.account_id.to_owned(),
    };
    Ok(match isolation {
        Isolation::MicroVm => {
            let mut mc =
                MicroVmConfig::from_images_dir(&cfg.images_dir, run_dir.to_owned(), launcher(cfg)?);
            mc.identity = identity;
            mc.extra_cmdline = cfg.vm_cmdline.clone();
            let b = MicroVmBackend::new(mc).map_err(backend_err("microvm"))?;
            (Arc::new(b), CodeForm::Image)
        }
        // `resolve` never returns Auto; treat it as process to stay total.
        Isolation::Process | Isolation::Auto => {
            let mut pc = ProcessConfig::from_images_dir(&cfg.images_dir, run_dir.to_owned());
            pc.identity = identity;
            require(
                "guest-init binary",
                pc.guest_init.clone(),
                "build the images or set --images-dir / LAMBDA_IMAGES_DIR",
            )?;
            let b = ProcessBackend::new(pc).map_err(backend_err("process"))?;
            (Arc::new(b), CodeForm::Directory)
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
