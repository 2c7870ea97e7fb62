//! The worker manager: sandboxes per function version, one invoke at a time each,
//! most-recently-used reuse, idle reaping, lease expiry, concurrency limits, pre-warming.

mod admission;
mod cold;
mod idle;
mod image_code;
mod init_phase;
mod invoke;
mod memory;
mod reap;

pub use admission::{Concurrency, Slot};
pub use idle::{IdleEntry, IdleStack, Retire};

use crate::code::unpack::CodeDir;
use crate::logfile::LogFiles;
use crate::metrics::{Metrics, SandboxCounts};
use crate::sandbox::{Backend, Sandbox};
use crate::spec::{FunctionKey, FunctionVersionSpec, WorkerError};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One function version's sandboxes on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLoad {
    pub key: FunctionKey,
    pub idle: u32,
    pub busy: u32,
    /// Time since the most recently used idle sandbox was last used.
    pub idle_for: Option<Duration>,
    /// The version's memory size (each of its sandboxes has this much).
    pub memory_mib: u32,
}

/// Tunables of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Concurrent executions on this host (shared pool plus reservations).
    pub host_concurrency: u32,
    /// Idle sandboxes older than this (since last use) are reaped.
    pub idle_timeout: Duration,
    /// Maximum sandbox lifetime; Lambda recycles execution environments after ~14 h.
    pub lease: Duration,
    /// Bound on sandbox start plus init (Lambda's 10 s).
    pub init_timeout: Duration,
    pub reap_interval: Duration,
    /// Time a sandbox gets between SIGTERM and SIGKILL when destroyed.
    pub destroy_grace: Duration,
    pub region: String,
    pub account_id: String,
    /// Directory for per-function log files; `None` keeps logs only in outcomes.
    pub log_dir: Option<PathBuf>,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    /// Host memory (MiB) that must stay available beyond a new sandbox's own memory
    /// size for a cold start to begin; short of it the invoke is throttled (429), as
    /// when the host's concurrency is used up. `0` turns the check off.
    pub memory_headroom_mib: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            host_concurrency: 1000,
            idle_timeout: Duration::from_secs(600),
            lease: Duration::from_secs(14 * 3600),
            init_timeout: Duration::from_secs(10),
            reap_interval: Duration::from_secs(5),
            destroy_grace: Duration::from_millis(500),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            log_dir: None,
            log_max_bytes: 10 << 20,
            log_keep: 5,
            memory_headroom_mib: 256,
        }
    }
}

pub(crate) struct State {
    pub(crate) concurrency: Concurrency,
    pub(crate) idle: HashMap<FunctionKey, IdleStack<Box<dyn Sandbox>>>,
    pub(crate) busy: u64,
    /// Busy sandboxes per key, and the keys of deleted functions among them: those
    /// are destroyed when their invoke ends instead of parked.
    pub(crate) busy_keys: HashMap<FunctionKey, u32>,
    pub(crate) forgotten: HashSet<FunctionKey>,
    pub(crate) starting: u64,
    pub(crate) starting_keys: HashMap<FunctionKey, u32>,
    /// Memory (MiB) promised to sandboxes that are starting (see [`memory`]).
    pub(crate) starting_mib: u64,
    /// The memory size of each version with a sandbox here, set when one starts;
    /// the reaper forgets versions with none left.
    pub(crate) memory_mib: HashMap<FunctionKey, u32>,
    /// The current revision of each (function, version) whose revision was replaced
    /// ([`Worker::retire_stale`]); idle sandboxes of any other revision are retired.
    pub(crate) current_revision: HashMap<(String, String), String>,
}

/// How a worker gets code it is told of by digest only ([`crate::spec::FunctionVersionSpec::code`]).
#[derive(Clone)]
pub struct CodeSupply {
    pub source: Arc<dyn crate::code::CodeSource>,
    /// Sealed copies of fetched packages (a worker host); `None` when the source is
    /// this host's own encrypted code store (the embedded frontend).
    pub cache: Option<Arc<crate::code::cache::SealedCache>>,
    pub unpacker: crate::code::unpack::Unpacker,
    /// Where container images' chunks are read (see [`crate::host::CodeSettings`]).
    pub chunks: Option<Arc<chunkstore::ChunkStore>>,
    /// Where a worker host copies the chunks it lacks from.
    pub chunk_fetch: Option<Arc<dyn crate::code::image::ChunkFetch>>,
}

impl CodeSupply {
    /// A package by digest: through the sealed cache, or from the source and checked.
    async fn fetch(&self, code: &crate::code::CodeRef) -> Result<Vec<u8>, crate::code::CodeError> {
        match &self.cache {
            Some(cache) => cache.get(code).await,
            None => {
                let zip = self.source.fetch(code).await?;
                crate::code::check_digest(code, &zip)?;
                Ok(zip)
            }
        }
    }
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) code: Option<CodeSupply>,
    pub(crate) cfg: WorkerConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) metrics: Metrics,
    pub(crate) logs: Option<Arc<LogFiles>>,
}

/// One function version's log file as a sandbox's sink.
struct VersionLog {
    files: Arc<LogFiles>,
    function: String,
    version: String,
    /// A write failed (e.g. a full disk) and was reported; later failures are not,
    /// until a write succeeds again: a flood of lines must not become a flood of
    /// the worker's own.
    failing: std::sync::atomic::AtomicBool,
}

impl crate::sandbox::LogSink for VersionLog {
    fn line(&self, text: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.files.append_line(&self.function, &self.version, text) {
            Ok(()) => self.failing.store(false, Relaxed),
            Err(e) => {
                if !self.failing.swap(true, Relaxed) {
                    eprintln!("worker: {e}; further lines of this log are dropped silently until a write succeeds");
                }
            }
        }
    }
}

static NEXT_SANDBOX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Inner {
    /// For a spec naming its code by digest only: pulls the package and unpacks it for
    /// sandbox `id`; returns the spec pointing at that directory, and the directory
    /// (removed when dropped; none for an image a microVM reads lazily). `None` when
    /// the spec already has local code.
    pub(crate) async fn unpack_code(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
    ) -> Result<Option<(FunctionVersionSpec, Option<CodeDir>)>, crate::code::CodeError> {
        use crate::code::CodeError;
        if spec.code_dir.is_some() || spec.code_image.is_some() {
            return Ok(None);
        }
        let Some(code) = &spec.code else {
            return Ok(None);
        };
        let supply = self.code.as_ref().ok_or_else(|| {
            CodeError::Unreachable("this worker was given no code source".to_owned())
        })?;
        if let Some(image) = &spec.image {
            if self.backend.reads_images_lazily() {
                let ready = supply.lazy_image(spec, image, code).await?;
                return Ok(Some((ready, None)));
            }
            let (mounted, dir) = supply.mount_image(spec, image, code).await?;
            return Ok(Some((mounted, Some(dir))));
        }
        let fetch = supply.fetch(code);
        let digest = crate::code::digest_hex(&code.sha256)?;
        let mut dir = supply.unpacker.for_sandbox(&digest, id, fetch).await?;
        let mut local = spec.clone();
        local.code_dir = Some(dir.path().to_owned());
        if !spec.layers.packages.is_empty() {
            let opt = self
                .unpack_layers(supply, &spec.layers.packages, id)
                .await?;
            local.layers.dir = Some(opt.path().to_owned());
            dir.attach(opt);
        }
        Ok(Some((local, Some(dir))))
    }

    /// The merged layers for sandbox `id`, pulled (through the cache) if need be.
    async fn unpack_layers(
        &self,
        supply: &CodeSupply,
        packages: &[crate::code::CodeRef],
        id: &str,
    ) -> Result<crate::code::unpack::CodeDir, crate::code::CodeError> {
        let digests = packages
            .iter()
            .map(|p| crate::code::digest_hex(&p.sha256))
            .collect::<Result<Vec<_>, _>>()?;
        let fetch = async {
            let mut zips = Vec::with_capacity(packages.len());
            for p in packages {
                zips.push(supply.fetch(p).await?);
            }
            Ok(zips)
        };
        supply
            .unpacker
            .layers_for_sandbox(&digests, id, fetch)
            .await
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unique per host: ids name cgroups and run directories, and several workers may
    /// live in one process (tests) or on one host (one per process id).
    pub(crate) fn new_sandbox_id(&self) -> String {
        let n = NEXT_SANDBOX.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("sb-{}-{n}", std::process::id())
    }

    /// Where a new sandbox of `spec` writes its function output as it arrives.
    pub(crate) fn log_sink(
        &self,
        spec: &FunctionVersionSpec,
    ) -> Option<Arc<dyn crate::sandbox::LogSink>> {
        let files = self.logs.clone()?;
        Some(Arc::new(VersionLog {
            files,
            function: spec.name.clone(),
            version: spec.version.clone(),
            failing: Default::default(),
        }))
    }

    /// Appends the worker's own lines (START, END, REPORT, INIT_REPORT, timeouts) to the
    /// function version's log, in order with the function's.
    pub(crate) fn log_platform(&self, spec: &FunctionVersionSpec, text: &str) {
        if let Some(files) = &self.logs {
            if let Err(e) = files.append(&spec.name, &spec.version, text) {
                eprintln!("worker: {e}");
            }
        }
    }

    /// Destroys sandboxes in the background. Outside a tokio runtime (e.g. `reap` called
    /// from plain code) they are dropped instead, which kills them without a grace period.
    pub(crate) fn destroy_all(&self, sandboxes: Vec<Box<dyn Sandbox>>) {
        let grace = self.cfg.destroy_grace;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                for sb in sandboxes {
                    rt.spawn(sb.destroy(grace));
                }
            }
            Err(_) => drop(sandboxes),
        }
    }
}

/// The worker side of the data plane for one host.
#[derive(Clone)]
pub struct Worker {
    pub(crate) inner: Arc<Inner>,
}

impl Worker {
    pub fn new(backend: Arc<dyn Backend>, cfg: WorkerConfig) -> Self {
        Self::with_code(backend, cfg, None)
    }

    /// A worker that can also run specs naming their code by digest only.
    pub fn with_code(
        backend: Arc<dyn Backend>,
        cfg: WorkerConfig,
        code: Option<CodeSupply>,
    ) -> Self {
        let logs = cfg
            .log_dir
            .as_ref()
            .map(|d| Arc::new(LogFiles::new(d, cfg.log_max_bytes, cfg.log_keep)));
        let state = State {
            concurrency: Concurrency::new(cfg.host_concurrency),
            idle: HashMap::new(),
            busy: 0,
            starting_mib: 0,
            busy_keys: HashMap::new(),
            forgotten: HashSet::new(),
            starting: 0,
            starting_keys: HashMap::new(),
            memory_mib: HashMap::new(),
            current_revision: HashMap::new(),
        };
        Self {
            inner: Arc::new(Inner {
                backend,
                code,
                cfg,
                state: Mutex::new(state),
                metrics: Metrics::default(),
                logs,
            }),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics(&self) -> String {
        let counts = {
            let st = self.inner.lock();
            SandboxCounts {
                idle: st.idle.values().map(|s| s.len() as u64).sum(),
                busy: st.busy,
                starting: st.starting,
            }
        };
        self.inner.metrics.render(counts)
    }

    /// Sandboxes per function version (idle, and busy or starting), for placement
    /// across hosts.
    pub fn pools(&self) -> Vec<PoolLoad> {
        let st = self.inner.lock();
        let mut out: HashMap<FunctionKey, PoolLoad> = HashMap::new();
        let blank = |k: &FunctionKey| PoolLoad {
            key: k.clone(),
            idle: 0,
            busy: 0,
            idle_for: None,
            memory_mib: st.memory_mib.get(k).copied().unwrap_or(0),
        };
        for (k, stack) in &st.idle {
            let p = out.entry(k.clone()).or_insert_with(|| blank(k));
            p.idle = stack.len() as u32;
            p.idle_for = stack.mru_last_used().map(|t| t.elapsed());
        }
        // A starting sandbox counts as busy: placement must see it at once.
        for (k, n) in st.busy_keys.iter().chain(&st.starting_keys) {
            out.entry(k.clone()).or_insert_with(|| blank(k)).busy += *n;
        }
        out.into_values().collect()
    }

    /// The sealed code cache, on a worker told of code by digest.
    pub fn code_cache(&self) -> Option<&Arc<crate::code::cache::SealedCache>> {
        self.inner.code.as_ref().and_then(|c| c.cache.as_ref())
    }

    /// Invokes running now.
    pub fn busy(&self) -> u64 {
        self.inner.lock().busy
    }

    /// Number of idle sandboxes of a function version.
    pub fn idle_count(&self, key: &FunctionKey) -> usize {
        self.inner.lock().idle.get(key).map_or(0, |s| s.len())
    }

    pub fn cold_starts(&self) -> u64 {
        self.inner.metrics.cold_starts()
    }

    /// Starts `count` sandboxes for `spec` and parks them idle (pre-warmed pool).
    pub async fn prewarm(
        &self,
        spec: &FunctionVersionSpec,
        count: u32,
    ) -> Result<u32, WorkerError> {
        spec.validate().map_err(WorkerError::InvalidSpec)?;
        let mut started = 0;
        for _ in 0..count {
            match cold::start(&self.inner, spec, self.inner.cfg.init_timeout).await {
                Ok(c) => {
                    let now = Instant::now();
                    self.inner
                        .lock()
                        .idle
                        .entry(spec.key())
                        .or_default()
                        .push(IdleEntry {
                            sandbox: c.sandbox,
                            id: c.id,
                            created: now,
                            last_used: now,
                        });
                    started += 1;
                }
                Err(e) => return Err(e.into_worker_error()),
            }
        }
        Ok(started)
    }

    /// Retires idle sandboxes past the idle timeout or lease, or of a replaced revision;
    /// returns how many.
    pub fn reap(&self) -> usize {
        reap::reap(&self.inner)
    }

    /// Runs [`Worker::reap`] every `reap_interval` until the worker is dropped.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        reap::spawn(&self.inner)
    }

    /// Makes `current` the revision of `name`/`version` and stops that version's idle
    /// sandboxes of any other revision; other functions and versions stay warm. A
    /// sandbox of an older revision that is busy now parks under its own revision's key
    /// when released, so it is never reused, and the next reap (or call) stops it.
    /// Returns how many sandboxes were stopped.
    pub fn retire_stale(&self, name: &str, version: &str, current: &str) -> usize {
        let gone = {
            let mut st = self.inner.lock();
            st.current_revision
                .insert((name.to_owned(), version.to_owned()), current.to_owned());
            st.take_stale()
        };
        let n = gone.len();
        for _ in 0..n {
            self.inner.metrics.reaped(Retire::Stale.as_str());
        }
        self.inner
            .destroy_all(gone.into_iter().map(|e| e.sandbox).collect());
        n
    }

    /// A function (or one version of it) was deleted: its idle sandboxes stop and its
    /// log files close. A busy sandbox finishes its invoke and is then destroyed.
    pub fn forget(&self, name: &str, version: Option<&str>) {
        let matches = |k: &FunctionKey| k.name == name && version.is_none_or(|v| k.version == v);
        let gone: Vec<Box<dyn Sandbox>> = {
            let mut st = self.inner.lock();
            let busy: Vec<FunctionKey> = st
                .busy_keys
                .keys()
                .filter(|k| matches(k))
                .cloned()
                .collect();
            st.forgotten.extend(busy);
            let keys: Vec<FunctionKey> = st.idle.keys().filter(|k| matches(k)).cloned().collect();
            keys.iter()
                .filter_map(|k| st.idle.remove(k))
                .flat_map(|mut s| s.drain_all())
                .map(|e| e.sandbox)
                .collect()
        };
        for _ in &gone {
            self.inner.metrics.reaped("deleted");
        }
        self.inner.destroy_all(gone);
        self.inner.backend.forget(name, version);
        if let Some(files) = &self.inner.logs {
            match version {
                Some(v) => files.close(name, v),
                None => files.close_function(name),
            }
        }
    }

    /// How many log files the worker holds open.
    pub fn open_log_files(&self) -> usize {
        self.inner.logs.as_ref().map_or(0, |l| l.open_count())
    }

    /// Destroys every idle sandbox (busy ones are destroyed when their invoke ends
    /// only if they fail; call this after draining traffic).
    pub fn shutdown_idle(&self) {
        let all: Vec<Box<dyn Sandbox>> = {
            let mut st = self.inner.lock();
            st.idle
                .values_mut()
                .flat_map(|s| s.drain_all())
                .map(|e| e.sandbox)
                .collect()
        };
        self.inner.destroy_all(all);
    }
}
