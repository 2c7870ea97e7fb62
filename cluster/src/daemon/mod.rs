//! The worker daemon (`supervisor worker serve`): one host's sandboxes behind a link
//! listener that admits only frontends of the cluster. It joins with a lease; near its
//! end it takes no new invokes, lets in-flight ones finish, stops its sandboxes, and
//! either leaves or rejoins as a new incarnation.

mod budget;
mod code_source;
mod handler;
mod lease;
mod scrape;

pub use code_source::LinkCodeSource;

use crate::link::transport;
use crate::tls::{self, LinkStats, Role, TlsFiles};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::host::{CodeSettings, Host, HostSettings};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Host(#[from] worker::host::HostError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Settings of `supervisor worker serve`.
pub struct DaemonSettings {
    pub id: String,
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub host: HostSettings,
    pub code_cache_max_bytes: u64,
    /// Copies of container images' chunks kept on this worker, in bytes.
    pub chunk_copies_max_bytes: u64,
    /// How long one incarnation serves (Lambda's hosts: hours; tests: seconds).
    pub lease: Duration,
    /// After the lease, start again as a new incarnation instead of exiting.
    pub rejoin: bool,
    /// Memory for sandboxes [default: the host's MemTotal less 512 MiB].
    pub capacity_mib: Option<u64>,
    /// Also serve `/metrics` over plain HTTP here (for scrapers without a certificate).
    pub metrics_listen: Option<SocketAddr>,
}

/// A running daemon's shared state.
pub struct Daemon {
    pub id: String,
    host: Host,
    incarnation: tokio::sync::watch::Sender<Incarnation>,
    draining: AtomicBool,
    in_flight: AtomicU64,
    pub stats: Arc<LinkStats>,
    capacity_mib: u64,
    cpus: u32,
    lease: Duration,
    bodies: budget::BodyBudget,
}

/// One run of the worker between joining and the end of its lease.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub id: String,
    pub lease_end: Instant,
}

fn new_incarnation(lease: Duration) -> Incarnation {
    let mut b = [0u8; 8];
    let _ = getrandom(&mut b);
    Incarnation {
        id: b.iter().map(|x| format!("{x:02x}")).collect(),
        lease_end: Instant::now() + lease,
    }
}

fn getrandom(b: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

/// Counts an invoke in flight while alive. Taken before the draining flag is read, so
/// a drain either sees the invoke or the invoke sees the drain (both `SeqCst`).
pub(crate) struct InFlight(Arc<Daemon>);

impl InFlight {
    fn new(d: &Arc<Daemon>) -> Self {
        d.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(d.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn mem_total_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

impl Daemon {
    /// Starts the host and binds the listener. Must run inside a Tokio runtime.
    pub async fn start(
        mut s: DaemonSettings,
    ) -> Result<(Arc<Self>, tokio::net::TcpListener), DaemonError> {
        let stats = Arc::new(LinkStats::default());
        let client = tls::client_config(&s.tls, Role::Frontend, stats.clone())?;
        let code = Arc::new(LinkCodeSource::new(client, stats.clone()));
        s.host.code = Some(CodeSettings {
            source: code.clone(),
            cache_max_bytes: Some(s.code_cache_max_bytes),
            chunks: None,
            chunk_fetch: Some(code.clone()),
            chunk_copies_max_bytes: s.chunk_copies_max_bytes,
        });
        let host = Host::start(&s.host)?;
        eprintln!("worker {}: {}", s.id, host.selection);
        let listener = tokio::net::TcpListener::bind(s.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: s.listen,
                source,
            })?;
        let scrape = match s.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Listen { addr, source })?,
            ),
            None => None,
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let daemon = Arc::new(Self {
            id: s.id,
            host,
            incarnation: tokio::sync::watch::Sender::new(new_incarnation(s.lease)),
            draining: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            stats,
            capacity_mib: s
                .capacity_mib
                .unwrap_or_else(|| mem_total_mib().saturating_sub(512)),
            cpus,
            lease: s.lease,
            bodies: budget::BodyBudget::new(budget::BODY_BUDGET_BYTES),
        });
        if let Some(listener) = scrape {
            scrape::spawn(Arc::downgrade(&daemon), listener);
        }
        Ok((daemon, listener))
    }

    pub fn worker(&self) -> &worker::Worker {
        &self.host.worker
    }

    /// (hits, fetches, bytes held) of the sealed code cache.
    fn code_cache_counts(&self) -> (u64, u64, u64) {
        self.host.worker.code_cache().map_or((0, 0, 0), |c| {
            let (h, f) = c.counts();
            (h, f, c.held_bytes())
        })
    }

    fn incarnation(&self) -> tokio::sync::watch::Ref<'_, Incarnation> {
        self.incarnation.borrow()
    }

    /// The current incarnation, and each new one as the worker rejoins.
    pub fn incarnations(&self) -> tokio::sync::watch::Receiver<Incarnation> {
        self.incarnation.subscribe()
    }

    /// Accepts frontends until `shutdown` resolves or the lease ends without `rejoin`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls_files: &TlsFiles,
        rejoin: bool,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let server = tls::server_config(tls_files, Role::Frontend, self.stats.clone())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        eprintln!("worker {}: incarnation {}", self.id, self.incarnation().id);
        let lease = tokio::spawn(lease::run(self.clone(), rejoin));
        let mut shutdown = std::pin::pin!(shutdown);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(
            crate::link::MAX_PENDING_HANDSHAKES,
        ));
        loop {
            let accepted = tokio::select! {
                a = crate::link::accept_tcp(&listener) => a,
                () = &mut shutdown => break,
                _ = wait_finished(&lease) => break,
            };
            let Some(tcp) = accepted else { continue };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                continue; // dropped: too many handshakes in progress
            };
            let (me, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let accepted = tokio::time::timeout(
                    crate::link::HANDSHAKE_TIMEOUT,
                    tls::accept(&acceptor, tcp, &me.stats),
                );
                let accepted = accepted.await;
                drop(permit);
                let Ok(Ok((tls, peer))) = accepted else {
                    return;
                };
                tracing::debug!(peer = %peer.id, "frontend connected");
                let stream = tls::Counted::new(tls, me.stats.clone());
                let h = me.clone();
                let _ = transport::serve(stream, move |req| handler::handle(h.clone(), req)).await;
            });
        }
        lease.abort();
        self.draining.store(true, Ordering::SeqCst);
        lease::drain(&self, Duration::from_secs(30)).await;
        Ok(())
    }
}

async fn wait_finished(task: &tokio::task::JoinHandle<()>) {
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
