//! [`Supervisor`]: the opened data dir (keys, registry, code store) shared by
//! every request handler.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;

use crate::auth::{Credentials, CredentialsError, Verifier};
use crate::codestore::master_key::MasterKeyError;
use crate::codestore::{CodeStore, CodeStoreError, MasterKey, ZipLimits};
use crate::config::Config;
use crate::registry::{Registry, RegistryError};
use worker::host::lock::DataDirLock;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("master key {0} is missing but the data dir holds encrypted code; restore the key (or pass --master-key-file)")]
    MissingMasterKey(PathBuf),
    #[error(transparent)]
    Lock(#[from] worker::host::lock::LockError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    CodeStore(#[from] CodeStoreError),
    #[error("chunk store: {0}")]
    Chunks(#[from] chunkstore::StoreError),
    #[error("--etcd: {0}")]
    Shared(#[from] crate::shared::etcd::EtcdError),
    /// The first read of the shared registry failed: etcd is down or refuses this client.
    #[error("reading the shared registry from etcd: {0} (are the endpoints right and reachable, and with https://, do --etcd-ca and this client's certificate match the cluster's?)")]
    SharedRegistry(RegistryError),
}

/// What happened while opening, for the operator.
#[derive(Debug, Default)]
pub struct StartupReport {
    /// Set when credentials were generated on this start.
    pub generated_credentials: Option<PathBuf>,
    pub generated_master_key: Option<PathBuf>,
    /// Code objects left by a crash between write and commit, now removed.
    pub orphans_removed: usize,
    /// Container-image chunks no version references any more, now removed.
    pub chunks_removed: u64,
}

/// With a shared registry, an unreferenced code object younger than this may belong to
/// an upload another frontend has not committed yet.
const SHARED_ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

pub struct Supervisor {
    config: Config,
    credentials: Credentials,
    verifier: Verifier,
    registry: Registry,
    store: CodeStore,
    images: crate::images::Images,
    chunk_gc: crate::chunk_gc::ChunkGc,
    /// Serialises control-plane mutations so the code store and registry
    /// change together.
    write_lock: Mutex<()>,
    large_bodies: tokio::sync::Semaphore,
    /// Told of every deleted function or version (name, version), e.g. by the invoke
    /// path, whose worker then lets go of its sandboxes and log files.
    deletion_listeners: std::sync::RwLock<Vec<DeletionListener>>,
    /// Seals this host's SnapStart snapshots (derived from the master key, so they
    /// open again after a restart).
    snapshot_key: zeroize::Zeroizing<[u8; 32]>,
    /// `Some` with `--etcd`.
    shared: Option<crate::shared::Shared>,
    _lock: DataDirLock,
}

/// Called with (function, `Some(version)` or `None` for the whole function).
pub type DeletionListener = Box<dyn Fn(&str, Option<&str>) + Send + Sync>;

impl Supervisor {
    pub fn open(config: Config) -> Result<(Arc<Self>, StartupReport), SupervisorError> {
        let mut report = StartupReport::default();
        let dir = config.data_dir.clone();
        let dir_err = |source| SupervisorError::DataDir {
            path: dir.clone(),
            source,
        };
        if !dir.exists() {
            // Only a directory we create is tightened; an operator-provided
            // one keeps its mode (keys and objects are 0600 themselves).
            std::fs::create_dir_all(&dir).map_err(dir_err)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_err)?;
        }

        let lock = DataDirLock::acquire(&dir)?;

        let credentials = match &config.credentials {
            Some((id, secret)) => Credentials::new(id.clone(), secret.clone())?,
            None => {
                let (c, created) = Credentials::load_or_generate(&dir)?;
                report.generated_credentials = created;
                c
            }
        };
        let master = match &config.master_key_file {
            Some(p) => MasterKey::load(p)?,
            None => {
                let path = dir.join("master.key");
                if !path.exists() && has_code_objects(&dir.join("code")) {
                    // A fresh key could never open the existing objects.
                    return Err(SupervisorError::MissingMasterKey(path));
                }
                let (k, created) = MasterKey::load_or_generate(&path)?;
                if created {
                    report.generated_master_key = Some(path);
                }
                k
            }
        };
        let shared = match config.shared.clone() {
            Some(settings) => Some(crate::shared::Shared::connect(settings, &master)?),
            None => None,
        };
        let registry = match &shared {
            Some(s) => Registry::open_shared(s.etcd.clone(), s.snapshot_every())
                .map_err(SupervisorError::SharedRegistry)?,
            None => Registry::open(&dir.join("registry.sqlite3"))?,
        };
        // Earlier versions kept decrypted code under DATA_DIR/cache; plaintext is now
        // only in sandboxes' own directories.
        let legacy_cache = dir.join("cache");
        if legacy_cache.is_dir() {
            std::fs::remove_dir_all(&legacy_cache).map_err(dir_err)?;
        }
        let images = crate::images::Images::open(&dir, &master, config.registries.clone())?;
        let snapshot_key = master.derive(b"lambda snapshot vault v1");
        let mut store = CodeStore::open(&dir.join("code"), master, ZipLimits::default())?;
        if let Some(s) = &shared {
            store = store.with_peers(s.peers.clone());
        }

        // A crash after sealing code but before the registry commit leaves
        // an unreferenced object; nothing can reach it, so remove it. With a shared
        // registry, a young object may be another frontend's upload in flight.
        let live = registry.code_objects()?;
        for id in store.object_ids()? {
            let young = shared.is_some() && store.age(&id).is_none_or(|a| a < SHARED_ORPHAN_AGE);
            if !live.contains(&id) && !young {
                store.remove(&id)?;
                report.orphans_removed += 1;
            }
        }
        report.chunks_removed = collect_chunks(&registry, &store, &images, config.chunk_gc_delay)?;
        let verifier = Verifier::new(
            &config.region,
            "lambda",
            vec![credentials.clone()],
            time::Duration::seconds(i64::from(config.max_clock_skew_secs)),
        );
        let sup = Arc::new(Self {
            config,
            credentials,
            verifier,
            registry,
            store,
            images,
            chunk_gc: Default::default(),
            write_lock: Mutex::new(()),
            large_bodies: tokio::sync::Semaphore::new(crate::http::LARGE_BODY_PERMITS),
            deletion_listeners: std::sync::RwLock::new(Vec::new()),
            snapshot_key,
            shared,
            _lock: lock,
        });
        Ok((sup, report))
    }

    /// The complete HTTP API: control plane + `signed` routes (e.g. invoke)
    /// behind SigV4, and `public` routes without it (e.g. `/metrics`).
    pub fn router(self: &Arc<Self>, signed: Router<Arc<Self>>, public: Router) -> Router {
        let public = match &self.shared {
            Some(_) => public.merge(crate::shared::routes::routes(self.clone())),
            None => public,
        };
        crate::http::build_router(self.clone(), signed, public)
    }

    pub(crate) fn large_body_permits(&self) -> &tokio::sync::Semaphore {
        &self.large_bodies
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state shared with other frontends, with `--etcd`.
    pub fn shared(&self) -> Option<&crate::shared::Shared> {
        self.shared.as_ref()
    }
    pub fn on_deletion(&self, listener: DeletionListener) {
        self.deletion_listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    /// Tells the listeners a function (or one of its versions) is gone.
    pub fn deleted(&self, function: &str, version: Option<&str>) {
        for l in self
            .deletion_listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l(function, version);
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
    pub fn images(&self) -> &crate::images::Images {
        &self.images
    }

    /// Where this host's worker seals SnapStart snapshots: `DATA_DIR/snapshots`.
    pub fn snapshot_vault(&self) -> worker::sandbox::microvm::VaultSettings {
        worker::sandbox::microvm::VaultSettings {
            dir: self.config.data_dir.join("snapshots"),
            key: self.snapshot_key.clone(),
            bounds: worker::sandbox::microvm::VaultBounds::default(),
        }
    }

    pub(crate) fn chunk_gc(&self) -> &crate::chunk_gc::ChunkGc {
        &self.chunk_gc
    }

    pub fn store(&self) -> &CodeStore {
        &self.store
    }

    pub(crate) fn write_guard(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
    pub fn function_arn(&self, name: &str, qualifier: Option<&str>) -> String {
        let base = format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.config.region, self.config.account_id
        );
        match qualifier {
            Some(q) => format!("{base}:{q}"),
            None => base,
        }
    }
}

fn has_code_objects(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".code")))
    })
}

/// The longest a collection spares chunks (from another frontend) no known version
/// uses; `--chunk-gc-delay-secs` shortens it.
const PUSHED_CHUNK_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the chunks of images no version uses any more (deleted or updated ones).
/// Runs before the API serves, or under [`crate::images::Images::exclusive`], so no
/// import can be writing chunks meanwhile.
pub(crate) fn collect_chunks(
    registry: &Registry,
    store: &CodeStore,
    images: &crate::images::Images,
    gc_delay: std::time::Duration,
) -> Result<u64, SupervisorError> {
    let mut packages = Vec::new();
    for r in registry.image_versions()? {
        packages.push(store.read(&r.code_object, &crate::control::ops::aad(&r))?);
    }
    // With a shared registry, another frontend may have just pushed chunks of a
    // version whose registry entry has not reached this one yet (it follows the push
    // within moments).
    let min_age = match registry.shared_log_prefix() {
        Some(_) => PUSHED_CHUNK_GRACE.min(gc_delay),
        None => std::time::Duration::ZERO,
    };
    Ok(images.collect_garbage(&packages, min_age)?.removed_chunks)
}
