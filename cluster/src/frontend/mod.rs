//! The frontend's side of the cluster: the workers it knows by address, their links
//! and status, placement of each invoke ([`crate::placement`]), and the code server
//! workers fetch packages from.

pub mod code_server;
mod dispatch;
mod remote;
mod report;
mod views;

pub use code_server::{CodeLookup, LookupError};
pub use dispatch::RemoteError;
pub use report::WorkerSummary;

use crate::placement::Policy;
use crate::tls::{self, LinkStats, Role, TlsFiles};
use remote::{Event, RemoteWorker};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
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
    #[error("no workers configured")]
    NoWorkers,
}

/// Settings of `supervisor serve --role frontend`.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    pub id: String,
    pub tls: TlsFiles,
    /// Worker link addresses (`host:port`).
    pub workers: Vec<String>,
    /// Where workers fetch code from this frontend.
    pub link_listen: SocketAddr,
    /// The address workers dial for code [default: `link_listen`].
    pub advertise: Option<String>,
}

pub struct Frontend {
    pub id: String,
    advertise: String,
    workers: Vec<Arc<RemoteWorker>>,
    views: Mutex<Views>,
    /// Memory size per version key, from dispatches (status reports only counts).
    memory: Mutex<HashMap<String, u64>>,
    /// Invokes in flight per function with reserved concurrency: the reservation holds
    /// across workers, so the frontend enforces it.
    reserved: Mutex<HashMap<String, u32>>,
    policy: Policy,
    pub stats: Arc<LinkStats>,
    epoch: Instant,
    sent: Vec<AtomicU64>,
    lost: AtomicU64,
}

impl Frontend {
    /// Starts the link tasks (one per worker) and the code server.
    pub async fn start(
        s: FrontendSettings,
        lookup: Arc<dyn CodeLookup>,
    ) -> Result<Arc<Self>, FrontendError> {
        if s.workers.is_empty() {
            return Err(FrontendError::NoWorkers);
        }
        let stats = Arc::new(LinkStats::default());
        let client = tls::client_config(&s.tls, Role::Worker, stats.clone())?;
        let server = tls::server_config(&s.tls, Role::Worker, stats.clone())?;
        let listener = tokio::net::TcpListener::bind(s.link_listen)
            .await
            .map_err(|source| FrontendError::Listen {
                addr: s.link_listen,
                source,
            })?;
        let n = s.workers.len();
        let fe = Arc::new(Self {
            id: s.id.clone(),
            advertise: s
                .advertise
                .clone()
                .unwrap_or_else(|| s.link_listen.to_string()),
            workers: s
                .workers
                .iter()
                .map(|w| Arc::new(RemoteWorker::new(w)))
                .collect(),
            views: Mutex::new(Views::new(n)),
            memory: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
            policy: Policy::default(),
            stats: stats.clone(),
            epoch: Instant::now(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            lost: AtomicU64::new(0),
        });
        tokio::spawn(code_server::serve(
            listener,
            tokio_rustls::TlsAcceptor::from(server),
            lookup,
            stats.clone(),
        ));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let connector = tokio_rustls::TlsConnector::from(client);
        for (i, w) in fe.workers.iter().enumerate() {
            tokio::spawn(remote::run(
                i,
                w.clone(),
                connector.clone(),
                stats.clone(),
                tx.clone(),
            ));
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

    /// One status round trip to worker `index` over its link (the link's own latency,
    /// for benchmarks); `false` when it is not connected or the request failed.
    pub async fn status_round_trip(&self, index: usize) -> bool {
        let Some(send) = self.workers.get(index).and_then(|w| w.sender()) else {
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
                        tracing::warn!(worker = %fe.workers[i].addr, reason = %why, "worker down");
                    }
                    w.down(why);
                }
            }
        }
    }
}
