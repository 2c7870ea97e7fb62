//! Starting a complete supervisor (control plane, data plane, event runner) on a
//! listener; shared by `supervisor serve` and `supervisor demo`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dataplane::Host;
use crate::invoke::{CodeIndex, InvokeService, LocalCode};
use crate::Supervisor;
use worker::host::CodeSettings;

/// Time idle sandboxes get to stop after the server has drained.
const SANDBOX_STOP_GRACE: Duration = Duration::from_millis(700);

/// An opened supervisor with its invoke service, ready to serve.
pub struct Prepared {
    pub sup: Arc<Supervisor>,
    pub invoke: Arc<InvokeService>,
    pub listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
}

/// Raises the descriptor limit, opens the data dir, starts the worker (or, for the
/// frontend role, the links to the workers) and binds the listener. Prints the
/// operator messages (generated keys, isolation choice).
pub async fn prepare(config: Config) -> Result<Prepared, String> {
    // Before anything opens descriptors; `http::serve` derives its connection cap from
    // the limit in force.
    if let Err(e) = crate::http::fdlimit::raise_nofile() {
        tracing::warn!(error = %e, "keeping the current descriptor limit");
    }
    let listen = config.listen;
    let announce = config.announce_generated_credentials;
    let (sup, report) = Supervisor::open(config).map_err(|e| e.to_string())?;
    announce_startup(&sup, &report, announce);
    let codes = CodeIndex::new(&sup);
    let invoke = match sup.config().cluster.clone() {
        Some(settings) => start_frontend(&sup, settings, codes).await?,
        None => start_embedded(&sup, codes)?,
    };
    bind(sup, invoke, listen).await
}

fn announce_startup(sup: &Supervisor, report: &crate::StartupReport, announce: bool) {
    if let Some(path) = &report.generated_credentials {
        let c = sup.credentials();
        if announce {
            eprintln!(
                "supervisor: generated credentials (shown once): access key id {} secret access key {} ; stored in {} (mode 0600)",
                c.access_key_id,
                c.secret_access_key,
                path.display()
            );
        } else {
            eprintln!(
                "supervisor: generated access key {} ; credentials stored in {} (mode 0600)",
                c.access_key_id,
                path.display()
            );
        }
    }
    if let Some(path) = &report.generated_master_key {
        eprintln!(
            "supervisor: generated master key in {} (mode 0600); back it up",
            path.display()
        );
    }
    if report.orphans_removed > 0 {
        tracing::info!(
            count = report.orphans_removed,
            "removed code objects left by an interrupted write"
        );
    }
    if report.chunks_removed > 0 {
        tracing::info!(
            count = report.chunks_removed,
            "removed container-image chunks no version uses"
        );
    }
}

/// The frontend role: links to the workers and the code server they fetch from.
async fn start_frontend(
    sup: &Arc<Supervisor>,
    settings: cluster::frontend::FrontendSettings,
    codes: Arc<CodeIndex>,
) -> Result<Arc<InvokeService>, String> {
    let workers = settings.workers.len();
    let fe = cluster::frontend::Frontend::start(settings, codes.clone())
        .await
        .map_err(|e| format!("frontend role: {e}"))?;
    let from_etcd = match sup.shared() {
        Some(shared) => {
            crate::shared::workers::follow(shared.etcd.clone(), &fe);
            " and those registered in etcd"
        }
        None => "",
    };
    eprintln!(
        "supervisor: frontend {} with {workers} worker(s){from_etcd}; code served on {}",
        fe.id,
        fe.code_source()
    );
    let none = Err("this frontend runs no sandboxes (--role frontend)".to_owned());
    InvokeService::with_remote(sup.clone(), none, Some(fe), codes).map_err(|e| e.to_string())
}

/// The embedded data plane: this host's worker, pulling code from this process's store.
fn start_embedded(
    sup: &Arc<Supervisor>,
    codes: Arc<CodeIndex>,
) -> Result<Arc<InvokeService>, String> {
    let cfg = sup.config();
    let mut settings =
        cfg.data_plane
            .host_settings(&cfg.region, &cfg.account_id, cfg.data_dir.join("logs"));
    settings.snapshot_vault = Some(sup.snapshot_vault());
    settings.code = Some(CodeSettings {
        source: Arc::new(LocalCode(codes.clone())),
        cache_max_bytes: None,
        chunks: Some(sup.images().chunks()),
        // With `--etcd`, chunks this frontend lacks come from another frontend.
        chunk_fetch: sup.shared().map(|s| {
            Arc::new(crate::shared::peer_chunks::PeerChunkFetch(s.peers.clone()))
                as Arc<dyn worker::code::image::ChunkFetch>
        }),
        // Only a worker host keeps copies; this host reads its own store.
        chunk_copies_max_bytes: 0,
    });
    let plane = match Host::start(&settings) {
        Ok(p) => {
            eprintln!("supervisor: {}", p.selection);
            Ok(p)
        }
        Err(e) => {
            eprintln!(
                "supervisor: data plane unavailable, Invoke will answer ServiceException: {e}"
            );
            Err(e.to_string())
        }
    };
    InvokeService::new(sup.clone(), plane, codes).map_err(|e| e.to_string())
}

async fn bind(
    sup: Arc<Supervisor>,
    invoke: Arc<InvokeService>,
    listen: SocketAddr,
) -> Result<Prepared, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("binding {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(Prepared {
        sup,
        invoke,
        listener,
        addr,
    })
}

impl Prepared {
    /// Serves until `shutdown` resolves, then drains requests and stops idle sandboxes.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        self.invoke.start_background();
        if let Some(shared) = self.sup.shared() {
            shared
                .join(self.addr)
                .map_err(|e| format!("joining the frontends in etcd: {e}"))?;
            eprintln!(
                "supervisor: frontend {} shares its registry through etcd",
                shared.id()
            );
        }
        let router = self
            .sup
            .router(self.invoke.signed_routes(), self.invoke.public_routes());
        crate::http::serve(self.listener, router, shutdown)
            .await
            .map_err(|e| format!("server: {e}"))?;
        if let Some(shared) = self.sup.shared() {
            shared.leave();
        }
        if let Some(w) = self.invoke.worker() {
            w.shutdown_idle();
            tokio::time::sleep(SANDBOX_STOP_GRACE).await;
        }
        if let Some(plane) = self.invoke.plane() {
            if plane.owns_run_dir {
                // Best effort: a sandbox still stopping may keep a mount busy.
                let _ = std::fs::remove_dir_all(&plane.run_dir);
            }
        }
        Ok(())
    }
}
