//! One worker as a frontend sees it: a long-lived link connection, re-established with
//! backoff, and the worker's status, polled as a heartbeat.

use crate::link::client::LinkClient;
use crate::link::status::WorkerStatus;
use crate::link::STATUS_PATH;
use crate::tls::{self, LinkStats};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const POLL_EVERY: Duration = Duration::from_millis(500);
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const MAX_STATUS_BYTES: usize = 4 << 20;

pub struct RemoteWorker {
    pub addr: String,
    /// The identity its certificate must carry (`--worker ID@HOST:PORT`); without one
    /// any cluster worker may answer at this address.
    pub expected_id: Option<String>,
    conn: Mutex<Option<LinkClient>>,
    /// Invokes this frontend sent there.
    pub(crate) sent: AtomicU64,
    /// Known from etcd membership rather than `--worker` (only those leave the list).
    pub(crate) discovered: bool,
    /// On the list (always, for `--worker` ones): its link task keeps it connected.
    /// Once off the list, the task ends when the link is down.
    listed: AtomicBool,
    /// A link task is running for it.
    linked: AtomicBool,
}

/// What the connection task reports to the frontend.
pub(crate) enum Event {
    Status(usize, WorkerStatus),
    Down(usize, String),
}

impl RemoteWorker {
    /// From `HOST:PORT` or `ID@HOST:PORT`.
    pub fn new(spec: &str, discovered: bool) -> Self {
        let (expected_id, addr) = match spec.split_once('@') {
            Some((id, addr)) => (Some(id.to_owned()), addr.to_owned()),
            None => (None, spec.to_owned()),
        };
        Self {
            addr,
            expected_id,
            conn: Mutex::new(None),
            sent: AtomicU64::new(0),
            discovered,
            listed: AtomicBool::new(true),
            linked: AtomicBool::new(false),
        }
    }

    pub fn is_listed(&self) -> bool {
        self.listed.load(Ordering::SeqCst)
    }

    /// Puts it on or off the list; `true` when the caller must start its link task
    /// (it is listed and none runs).
    pub(crate) fn set_listed(&self, listed: bool) -> bool {
        self.listed.store(listed, Ordering::SeqCst);
        listed && !self.linked.swap(true, Ordering::SeqCst)
    }

    /// Whether a link task that found it off the list ends. Racing with
    /// [`Self::set_listed`], exactly one task stays when it is listed again.
    fn task_ends(&self) -> bool {
        if self.is_listed() {
            return false;
        }
        self.linked.store(false, Ordering::SeqCst);
        !self.is_listed() || self.linked.swap(true, Ordering::SeqCst)
    }

    /// A sender on the live connection, if there is one.
    pub fn sender(&self) -> Option<LinkClient> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|s| !s.is_closed())
    }

    fn set(&self, s: Option<LinkClient>) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    async fn connect(
        &self,
        connector: &tokio_rustls::TlsConnector,
        stats: &Arc<LinkStats>,
    ) -> Result<LinkClient, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (stream, peer) = tokio::time::timeout(
            crate::link::HANDSHAKE_TIMEOUT,
            tls::connect(connector, tcp, stats),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS: {e}"))?;
        if self.expected_id.as_ref().is_some_and(|id| *id != peer.id) {
            stats.record_refusal(tls::RefusalReason::BadIdentity);
            return Err(format!(
                "the worker at {} is {}, not {:?}",
                self.addr, peer.id, self.expected_id
            ));
        }
        tracing::debug!(worker = %peer.id, addr = %self.addr, "link up");
        LinkClient::handshake(tls::Counted::new(stream, stats.clone()))
            .await
            .map_err(|e| format!("HTTP/2: {e}"))
    }
}

pub(crate) async fn poll(send: &LinkClient) -> Result<WorkerStatus, String> {
    let req = http::Request::get(format!("http://link{STATUS_PATH}"))
        .body(())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = send.send(req, None).await?;
        resp.into_body().read_all(MAX_STATUS_BYTES).await
    };
    let body = tokio::time::timeout(POLL_TIMEOUT, exchange)
        .await
        .map_err(|_| "status timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("status: {e}"))
}

/// What a link task needs besides its worker.
#[derive(Clone)]
pub(crate) struct Links {
    pub connector: tokio_rustls::TlsConnector,
    pub stats: Arc<LinkStats>,
    pub events: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// Keeps worker `index` connected and polled until `events` is closed, or until it is
/// off the list with its link down.
pub(crate) async fn run(index: usize, w: Arc<RemoteWorker>, links: Links) {
    let Links {
        connector,
        stats,
        events,
    } = links;
    let mut backoff = BACKOFF_MIN;
    loop {
        if w.task_ends() {
            return;
        }
        let why = match w.connect(&connector, &stats).await {
            Ok(send) => {
                w.set(Some(send.clone()));
                backoff = BACKOFF_MIN;
                loop {
                    match poll(&send).await {
                        Ok(s) => {
                            if events.send(Event::Status(index, s)).is_err() {
                                return;
                            }
                        }
                        Err(e) => break e,
                    }
                    tokio::time::sleep(POLL_EVERY).await;
                }
            }
            Err(e) => e,
        };
        w.set(None);
        if events.send(Event::Down(index, why)).is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::RemoteWorker;

    #[test]
    fn one_link_task_runs_while_listed_and_a_relisting_restarts_an_ended_one() {
        let w = RemoteWorker::new("w1@10.0.0.1:7100", true);
        assert_eq!(w.expected_id.as_deref(), Some("w1"));
        assert!(w.set_listed(true), "the first listing starts a task");
        assert!(
            !w.set_listed(true),
            "a second listing does not start another"
        );
        assert!(!w.task_ends(), "listed: the task goes on");
        assert!(!w.set_listed(false));
        assert!(w.task_ends(), "off the list: the task ends");
        assert!(
            w.set_listed(true),
            "listed again after it ended: a new task"
        );
        // Off the list, then back before the task noticed: the running task stays.
        assert!(!w.set_listed(false));
        assert!(!w.set_listed(true));
        assert!(!w.task_ends());
    }
}
