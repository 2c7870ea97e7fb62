//! The frontend's side of the cluster: the workers it knows by address, their links
//! and status, placement of each invoke ([`crate::placement`]), and the code server
//! workers fetch packages from.

pub mod code_server;
mod dispatch;
mod membership;
mod remote;
mod report;
mod views;

pub use code_server::{CodeLookup, LookupError};
pub use dispatch::RemoteError;
pub use membership::ListedWorker;
pub use report::WorkerSummary;

use crate::placement::Policy;
use crate::tls::{self, LinkStats, Role, TlsFiles};
use remote::{Event, Links, RemoteWorker};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use views::Views;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("link listener {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Settings of `supervisor serve --role frontend`.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    pub id: String,
    pub tls: TlsFiles,
    /// Worker link addresses (`host:port` or `id@host:port`); more may be listed
    /// later ([`Frontend::set_discovered`]).
    pub workers: Vec<String>,
    /// Where workers fetch code from this frontend.
    pub link_listen: SocketAddr,
    /// The address workers dial for code [default: `link_listen`].
    pub advertise: Option<String>,
}

pub struct Frontend {
    pub id: String,
    advertise: String,
    /// Index `i` is the worker of view `i`. Slots are only added: a worker that leaves
    /// the list keeps its slot (not placed anything) and gets it back if it returns.
    workers: RwLock<Vec<Arc<RemoteWorker>>>,
    views: Mutex<Views>,
    links: Links,
    /// Where link tasks run (membership changes may arrive from another runtime).
    runtime: tokio::runtime::Handle,
    /// Memory size per version key, from dispatches (status reports only counts).
    memory: Mutex<HashMap<String, u64>>,
    /// Invokes in flight per function with reserved concurrency: the reservation holds
    /// across workers, so the frontend enforces it.
    reserved: Mutex<HashMap<String, u32>>,
    policy: Policy,
    pub stats: Arc<LinkStats>,
    epoch: Instant,
    lost: AtomicU64,
}

impl Frontend {
    /// Starts the link tasks (one per worker) and the code server.
    pub async fn start(
        s: FrontendSettings,
        lookup: Arc<dyn CodeLookup>,
    ) -> Result<Arc<Self>, FrontendError> {
        let stats = Arc::new(LinkStats::default());
        let client = tls::client_config(&s.tls, Role::Worker, stats.clone())?;
        let server = tls::server_config(&s.tls, Role::Worker, stats.clone())?;
        let listener = tokio::net::TcpListener::bind(s.link_listen)
            .await
            .map_err(|source| FrontendError::Listen {
                addr: s.link_listen,
                source,
            })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let fe = Arc::new(Self {
            id: s.id.clone(),
            advertise: s
                .advertise
                .clone()
                .unwrap_or_else(|| s.link_listen.to_string()),
            workers: RwLock::new(Vec::new()),
            views: Mutex::new(Views::new(0)),
            links: Links {
                connector: tokio_rustls::TlsConnector::from(client),
                stats: stats.clone(),
                events: tx,
            },
            runtime: tokio::runtime::Handle::current(),
            memory: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
            policy: Policy::default(),
            stats: stats.clone(),
            epoch: Instant::now(),
            lost: AtomicU64::new(0),
        });
        tokio::spawn(code_server::serve(
            listener,
            tokio_rustls::TlsAcceptor::from(server),
            lookup,
            stats,
        ));
        for w in &s.workers {
            fe.add_worker(RemoteWorker::new(w, false));
        }
        tokio::spawn(apply_events(Arc::downgrade(&fe), rx));
        Ok(fe)
    }

    /// The reference a worker fetches `code_sha256` by: from this frontend.
    pub fn code_ref(&self, code_sha256: &str) -> worker::code::CodeRef {
        worker::code::CodeRef {
            sha256: code_sha256.to_owned(),
            source: self.advertise.clone(),
        }
    }

    /// The address workers fetch code from.
    pub fn code_source(&self) -> &str {
        &self.advertise
    }

    fn tick(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn views(&self) -> std::sync::MutexGuard<'_, Views> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker of slot `index`.
    fn worker(&self, index: usize) -> Option<Arc<RemoteWorker>> {
        self.workers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .cloned()
    }

    /// Every worker slot, in index order.
    fn all_workers(&self) -> Vec<Arc<RemoteWorker>> {
        self.workers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One status round trip to worker `index` over its link (the link's own latency,
    /// for benchmarks); `false` when it is not connected or the request failed.
    pub async fn status_round_trip(&self, index: usize) -> bool {
        let Some(send) = self.worker(index).and_then(|w| w.sender()) else {
            return false;
        };
        remote::poll(&send).await.is_ok()
    }

    /// Workers currently up and taking invokes.
    pub fn available_workers(&self) -> usize {
        let mut v = self.views();
        v.refresh_all(Instant::now());
        v.loads.iter().filter(|l| l.available).count()
    }
}

/// Applies what the link tasks report until the frontend is dropped.
async fn apply_events(
    fe: std::sync::Weak<Frontend>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    while let Some(ev) = rx.recv().await {
        let Some(fe) = fe.upgrade() else { return };
        let memory = fe.memory.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tick = fe.tick();
        let mut views = fe.views();
        match ev {
            Event::Status(i, s) => {
                if let Some(mut w) = views.at(i) {
                    w.update(s, &memory, tick);
                }
            }
            Event::Down(i, why) => {
                if let Some(mut w) = views.at(i) {
                    if w.view.up {
                        let addr = fe.worker(i).map(|w| w.addr.clone()).unwrap_or_default();
                        tracing::warn!(worker = %addr, reason = %why, "worker down");
                    }
                    w.down(why);
                }
            }
        }
    }
}
