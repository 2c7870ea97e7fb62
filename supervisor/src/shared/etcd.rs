//! The etcd client, on a runtime thread of its own so the registry's synchronous code
//! can wait for it from any thread (a blocking pool thread or, briefly, an async one)
//! without nesting runtimes. Every request has a deadline: with etcd's quorum gone an
//! API call fails in seconds with [`EtcdError::Unavailable`] instead of hanging.
//!
//! One client per member: a request that cannot reach a member (refused connection,
//! or the member answers that it has no leader) goes to the next one, so a dead member
//! costs nothing while a quorum lives. A request that timed out is not resent
//! elsewhere: it may have been applied.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// How long one request may take before it counts as etcd being unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys a frontend writes stay far below etcd's 1.5 MiB request cap.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// Transient: no quorum, or a deadline passed.
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    /// Transient: this member was not reached, or has no leader; the request was not
    /// applied, so another member may take it.
    #[error("etcd member unreachable: {0}")]
    Unreachable(String),
    /// Transient: the lease a key was to be attached to has lapsed (etcd was away longer
    /// than its TTL); the registration renews it.
    #[error("etcd lease lapsed: {0}")]
    LeaseLost(String),
    /// Permanent: the operator's settings cannot work.
    #[error("etcd settings: {0}")]
    Settings(String),
    #[error("a value of {0} bytes is over the {MAX_VALUE_BYTES}-byte limit of a shared record")]
    TooLarge(usize),
    /// Permanent: a value in etcd fails authentication (another master key, or altered).
    #[error("etcd value refused: {0}")]
    Sealed(String),
}

impl EtcdError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::Unreachable(_) | Self::LeaseLost(_)
        )
    }
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        match &e {
            etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable => {
                Self::Unreachable(e.to_string())
            }
            etcd_client::Error::TransportError(_) => Self::Unreachable(e.to_string()),
            etcd_client::Error::GRpcStatus(s)
                if s.code() == tonic::Code::NotFound && s.message().contains("lease not found") =>
            {
                Self::LeaseLost(e.to_string())
            }
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

/// Where the shared state lives: the endpoints and the key prefix every key starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// `Some` for `https://` endpoints.
    pub tls: Option<EtcdTls>,
}

/// PEM files for `https://` endpoints: the CA that signed etcd's certificates, and this
/// client's certificate and key (etcd's `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl EtcdSettings {
    /// `urls` is `--etcd`'s comma-separated list: all `http://`, or all `https://` with
    /// `tls`.
    pub fn parse(urls: &str, prefix: &str, tls: Option<EtcdTls>) -> Result<Self, EtcdError> {
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        let mut endpoints = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            if !url.starts_with(scheme) {
                return Err(EtcdError::Settings(if tls.is_some() {
                    format!("{url}: with --etcd-ca, --etcd-cert and --etcd-key every endpoint is https://HOST:PORT")
                } else {
                    format!("{url}: expected http://HOST:PORT (https:// needs --etcd-ca, --etcd-cert and --etcd-key)")
                }));
            }
            endpoints.push(url.to_owned());
        }
        if endpoints.is_empty() {
            return Err(EtcdError::Settings("no etcd endpoint given".into()));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') {
            return Err(EtcdError::Settings(format!(
                "the key prefix {prefix:?} must start with '/'"
            )));
        }
        Ok(Self {
            endpoints,
            prefix: prefix.to_owned(),
            tls,
        })
    }
}

impl EtcdTls {
    fn options(&self) -> Result<etcd_client::TlsOptions, EtcdError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| EtcdError::Settings(format!("{}: {e}", p.display())))
        };
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)?))
            .identity(etcd_client::Identity::from_pem(
                read(&self.cert)?,
                read(&self.key)?,
            )))
    }
}

/// A client per member and the runtime thread their requests run on.
pub struct Etcd {
    clients: Vec<Client>,
    /// The member that answered last.
    preferred: AtomicUsize,
    runtime: tokio::runtime::Handle,
    prefix: String,
    /// Seals what frontends store (registry entries, Events); workers hold none.
    sealer: Option<super::sealing::Sealer>,
    /// Stops the runtime thread when the last handle goes.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Etcd {
    /// Starts the runtime thread and connects (lazily: a member that is down now is
    /// tried again at each request).
    pub fn connect(
        settings: &EtcdSettings,
        sealer: Option<super::sealing::Sealer>,
    ) -> Result<Self, EtcdError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Settings(format!("etcd client runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("etcd-runtime".into())
            .spawn(move || runtime.block_on(async move { drop(stopped.await) }))
            .map_err(|e| EtcdError::Settings(format!("etcd client thread: {e}")))?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some(tls) = &settings.tls {
            // With more than one rustls provider in the build, the process must name
            // one; an earlier install (by another part of this process) is kept.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            options = options.with_tls(tls.options()?);
        }
        let mut clients = Vec::new();
        for endpoint in &settings.endpoints {
            let (endpoint, options) = (endpoint.clone(), options.clone());
            clients.push(wait(&handle, REQUEST_TIMEOUT, async move {
                Ok(Client::connect([endpoint], Some(options)).await?)
            })?);
        }
        Ok(Self {
            clients,
            preferred: AtomicUsize::new(0),
            runtime: handle,
            prefix: settings.prefix.clone(),
            sealer,
            _stop: stop,
        })
    }

    /// `prefix/rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// A client per member, the one that answered last first (for tasks of their own:
    /// watches, lease keepalives, which move on to the next member when one fails).
    pub fn clients(&self) -> Vec<Client> {
        self.members().into_iter().map(|(_, c)| c).collect()
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// What seals shared values; a process without the master key (a worker) has none.
    pub fn sealer(&self) -> Result<&super::sealing::Sealer, EtcdError> {
        self.sealer.as_ref().ok_or_else(|| {
            EtcdError::Settings("this process holds no key for sealed values".into())
        })
    }

    /// The value at `key` as stored; `None` if there is none.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        self.call(|mut c| {
            let key = key.to_owned();
            async move {
                let resp = c.get(key, None).await?;
                Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
            }
        })
    }

    /// The value at `key`, opened with [`Self::sealer`]; `None` if there is none.
    pub fn get_sealed(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        self.get(key)?
            .map(|s| self.sealer()?.open(key, &s))
            .transpose()
    }

    /// Every (key, value) under `dir`.
    pub fn get_prefix(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        self.call(|mut c| {
            let dir = dir.to_owned();
            async move {
                let resp = c
                    .get(dir, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await?;
                Ok(resp
                    .kvs()
                    .iter()
                    .map(|kv| {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        (key, kv.value().to_vec())
                    })
                    .collect())
            }
        })
    }

    /// Runs `f` with a member's client on the etcd runtime and waits for it, at most the
    /// request deadline; a member that cannot be reached passes the request on.
    pub fn call<T, F, Fut>(&self, f: F) -> Result<T, EtcdError>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>> + Send + 'static,
    {
        let mut last = None;
        for (at, client) in self.members() {
            let done = wait(&self.runtime, REQUEST_TIMEOUT, f(client));
            if let Some(done) = self.settle(at, done, &mut last) {
                return done;
            }
        }
        Err(exhausted(last))
    }

    /// [`Self::call`] for async callers (the invoke path): awaits instead of blocking.
    pub async fn request<T, F, Fut>(&self, f: F) -> Result<T, EtcdError>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>> + Send + 'static,
    {
        let mut last = None;
        for (at, client) in self.members() {
            let attempt = self
                .runtime
                .spawn(with_deadline(REQUEST_TIMEOUT, f(client)));
            let done = attempt
                .await
                .unwrap_or_else(|e| Err(EtcdError::Unavailable(format!("etcd client task: {e}"))));
            if let Some(done) = self.settle(at, done, &mut last) {
                return done;
            }
        }
        Err(exhausted(last))
    }

    /// (index, client) of each member, the one that answered last first.
    fn members(&self) -> Vec<(usize, Client)> {
        let first = self.preferred.load(Ordering::Relaxed);
        let n = self.clients.len();
        (0..n)
            .map(|i| ((first + i) % n, self.clients[(first + i) % n].clone()))
            .collect()
    }

    /// The outcome of one attempt on member `at`: `None` to try the next member.
    fn settle<T>(
        &self,
        at: usize,
        done: Result<T, EtcdError>,
        last: &mut Option<EtcdError>,
    ) -> Option<Result<T, EtcdError>> {
        match done {
            Err(EtcdError::Unreachable(e)) => {
                *last = Some(EtcdError::Unreachable(e));
                None
            }
            done => {
                self.preferred.store(at, Ordering::Relaxed);
                Some(done)
            }
        }
    }

    /// Runs `fut` on the etcd runtime (requests to other frontends) and waits for it, at
    /// most `deadline`.
    pub fn run_for<T: Send + 'static>(
        &self,
        deadline: Duration,
        fut: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
    ) -> Result<T, EtcdError> {
        wait(&self.runtime, deadline, fut)
    }
}

fn exhausted(last: Option<EtcdError>) -> EtcdError {
    last.unwrap_or_else(|| EtcdError::Unavailable("no etcd member".into()))
}

/// `fut`'s outcome, or [`EtcdError::Unavailable`] once `deadline` has passed.
async fn with_deadline<T>(
    deadline: Duration,
    fut: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, EtcdError> {
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or_else(|_| {
            Err(EtcdError::Unavailable(format!(
                "no answer within {deadline:?}"
            )))
        })
}

/// Runs `fut` on `runtime` and blocks this thread until it ends or the deadline passes.
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    deadline: Duration,
    fut: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
) -> Result<T, EtcdError> {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(with_deadline(deadline, fut).await);
    });
    rx.recv_timeout(deadline + Duration::from_secs(1))
        .unwrap_or_else(|_| Err(EtcdError::Unavailable("the etcd client stopped".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_lists_and_refuse_what_cannot_work() {
        let s = EtcdSettings::parse("http://10.0.0.1:2379, http://10.0.0.2:2379", "/lm/", None)
            .unwrap();
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.prefix, "/lm");
        for bad in ["", "10.0.0.1:2379", "https://10.0.0.1:2379"] {
            assert!(EtcdSettings::parse(bad, "/lm", None).is_err(), "{bad}");
        }
        assert!(EtcdSettings::parse("http://a:1", "lm", None).is_err());
        let tls = EtcdTls {
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        assert!(EtcdSettings::parse("https://a:1", "/lm", Some(tls.clone())).is_ok());
        assert!(EtcdSettings::parse("https://a:1,http://b:1", "/lm", Some(tls)).is_err());
    }
}
