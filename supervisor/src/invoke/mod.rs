//! The Invoke API (`POST /2015-03-31/functions/{name}/invocations`), reserved
//! concurrency, asynchronous invocations and `/metrics`: the frontend half of the
//! data plane. It reaches sandboxes only through [`worker::Worker::invoke`],
//! [`worker::Worker::invoke_streaming`] and [`worker::Worker::metrics`] (embedded role),
//! or through `cluster::frontend::Frontend` to worker hosts (frontend role).

mod alias_route;
mod concurrency;
pub mod events;
pub mod eventstream;
mod follow;
mod handler;
pub mod headers;
pub mod metrics;
mod remote;
pub use remote::{local_code_supply, CodeIndex, LocalCode};
mod response;
mod spec;
mod stream;
mod url;
mod url_event;
mod url_stream;

use std::sync::Arc;

use axum::routing::{any, get, post, put};
use axum::{Extension, Router};
use worker::{InvokeOutcome, InvokeRequest, ThrottleReason, WorkerError};

use crate::control::names::FunctionRef;
use crate::dataplane::Host;
use crate::http::ApiError;
use crate::shared::etcd::EtcdError;
use crate::Supervisor;
use events::EventQueue;
use metrics::FrontMetrics;
use spec::Specs;

#[derive(Debug, thiserror::Error)]
pub enum InvokeSetupError {
    #[error(transparent)]
    Events(#[from] events::store::EventStoreError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// Why a synchronous run did not produce an outcome.
#[derive(Debug)]
pub enum RunError {
    /// Not found, bad request, code unpacking failure: answered as is.
    Api(ApiError),
    Throttled(ThrottleReason),
    /// The worker could not run it (no sandbox, no code): a service error.
    Worker(WorkerError),
    /// A worker host failed or vanished (frontend role).
    Remote(cluster::frontend::RemoteError),
}

impl RunError {
    /// Whether another attempt may succeed (the Event retry policy's system retries).
    pub fn is_transient(&self) -> bool {
        match self {
            // A restore that ran out of time may not the next time.
            Self::Api(e) => {
                e.kind.status().is_server_error()
                    || e.kind == crate::http::ErrorKind::SnapStartTimeout
            }
            Self::Throttled(_) => true,
            Self::Worker(e) => e.is_transient(),
            Self::Remote(e) => e.is_transient(),
        }
    }
}

impl From<ApiError> for RunError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<WorkerError> for RunError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Throttled(r) => Self::Throttled(r),
            WorkerError::InvalidSpec(m) => {
                Self::Api(ApiError::service(format!("invalid function spec: {m}")))
            }
            WorkerError::SnapStart(f) => Self::Api(snapstart_error(&f)),
            other => Self::Worker(other),
        }
    }
}

/// A failed SnapStart restore as Lambda answers it.
pub(crate) fn snapstart_error(f: &worker::SnapStartFailure) -> ApiError {
    use crate::http::ErrorKind;
    match f {
        worker::SnapStartFailure::Hook { .. } => ApiError::new(
            ErrorKind::SnapStart,
            format!("The function's runtime failed to restore from its snapshot: {f}. Check the function's logs."),
        ),
        worker::SnapStartFailure::Timeout(_) => ApiError::new(
            ErrorKind::SnapStartTimeout,
            format!("Lambda couldn't restore the snapshot within the timeout limit: {f}."),
        ),
    }
}

/// A worker's failure as the caller sees it: Lambda's `ServiceException`.
pub(crate) fn worker_error(e: &WorkerError) -> ApiError {
    match e {
        WorkerError::Code(c) => {
            ApiError::service(format!("could not get the function's code: {c}"))
        }
        other => ApiError::service(format!("could not start an execution environment: {other}")),
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api(e) => write!(f, "{e}"),
            Self::Throttled(r) => f.write_str(r.as_str()),
            Self::Worker(e) => write!(f, "{e}"),
            Self::Remote(e) => write!(f, "{e}"),
        }
    }
}

/// Where the embedded worker's code comes from: this process's own store.
const LOCAL_CODE_SOURCE: &str = "local";
/// How long an invoke that found this frontend's etcd lease lapsed waits for the new one.
const LEASE_RENEW_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who stops the sandboxes of a replaced revision.
enum Retire<'a> {
    Local(&'a worker::Worker),
    Remote(&'a cluster::frontend::Frontend),
}

/// Shared state of the invoke path.
pub struct InvokeService {
    sup: Arc<Supervisor>,
    /// The worker, or why none could be started (the control plane still serves).
    plane: Result<Host, String>,
    /// The frontend role: sandboxes run on these workers.
    remote: Option<Arc<cluster::frontend::Frontend>>,
    codes: Arc<remote::CodeIndex>,
    specs: Arc<Specs>,
    aliases: alias_route::AliasRoutes,
    urls: url::UrlCache,
    metrics: FrontMetrics,
    events: EventQueue,
}

impl InvokeService {
    /// The embedded data plane: `plane`'s worker pulls code from `codes`
    /// ([`LocalCode`]), which resolution fills.
    pub fn new(
        sup: Arc<Supervisor>,
        plane: Result<Host, String>,
        codes: Arc<remote::CodeIndex>,
    ) -> Result<Arc<Self>, InvokeSetupError> {
        Self::with_remote(sup, plane, None, codes)
    }

    /// With `remote`, invokes run on worker hosts, which fetch code from `codes` through
    /// this frontend's code server.
    pub fn with_remote(
        sup: Arc<Supervisor>,
        plane: Result<Host, String>,
        remote: Option<Arc<cluster::frontend::Frontend>>,
        codes: Arc<remote::CodeIndex>,
    ) -> Result<Arc<Self>, InvokeSetupError> {
        let specs = Arc::new(Specs::default());
        specs.load_reserved(sup.registry().all_reserved_concurrency()?);
        let retry_base = sup.config().data_plane.event_retry_base;
        let events = match sup.shared() {
            Some(shared) => EventQueue::with_backend(Arc::new(shared.events()), retry_base),
            None => EventQueue::open(&sup.config().data_dir.join("events.sqlite3"), retry_base)?,
        };
        if let Ok(p) = &plane {
            let worker = p.worker.clone();
            sup.on_deletion(Box::new(move |name, version| worker.forget(name, version)));
        }
        if let Some(fe) = &remote {
            let fe = fe.clone();
            sup.on_deletion(Box::new(move |name, version| {
                fe.forget(name, version, None)
            }));
        }
        Ok(Arc::new(Self {
            sup,
            plane,
            remote,
            codes,
            specs,
            aliases: Default::default(),
            urls: Default::default(),
            metrics: FrontMetrics::default(),
            events,
        }))
    }

    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.sup
    }

    /// The frontend role's cluster.
    pub fn remote(&self) -> Option<&Arc<cluster::frontend::Frontend>> {
        self.remote.as_ref()
    }

    pub fn plane(&self) -> Option<&Host> {
        self.plane.as_ref().ok()
    }

    /// The worker, if the data plane started.
    pub fn worker(&self) -> Option<&worker::Worker> {
        self.plane.as_ref().ok().map(|p| &p.worker)
    }

    /// Routes behind SigV4 (merged into the control plane's router). `/metrics` is
    /// one of them unless `--public-metrics` asked otherwise: it names every function.
    pub fn signed_routes(self: &Arc<Self>) -> Router<Arc<Supervisor>> {
        let metrics = if self.sup.config().public_metrics {
            Router::new()
        } else {
            Router::new().route("/metrics", get(handler::metrics))
        };
        metrics
            .route(
                "/2015-03-31/functions/{name}/invocations",
                post(handler::invoke),
            )
            .route(
                "/2021-11-15/functions/{name}/response-streaming-invocations",
                post(stream::invoke_stream),
            )
            .route(
                "/2017-10-31/functions/{name}/concurrency",
                put(concurrency::put).delete(concurrency::delete),
            )
            .route(
                "/2019-09-30/functions/{name}/concurrency",
                get(concurrency::get),
            )
            .route("/cluster/status", get(handler::cluster_status))
            .layer(Extension(self.clone()))
    }

    /// Routes without authentication: `/metrics` with `--public-metrics`, for scrapers
    /// that cannot sign.
    /// Routes outside the API's SigV4 layer: function URLs (which authenticate
    /// themselves) and, when configured, `/metrics`.
    pub fn public_routes(self: &Arc<Self>) -> Router {
        let urls = Router::new()
            .route("/lambda-url/{id}", any(url::serve_url))
            .route("/lambda-url/{id}/", any(url::serve_url))
            .route("/lambda-url/{id}/{*rest}", any(url::serve_url));
        let routes = if self.sup.config().public_metrics {
            urls.route("/metrics", get(handler::metrics))
        } else {
            urls
        };
        routes.layer(Extension(self.clone()))
    }

    /// Starts the event runner and the configured pre-warming.
    pub fn start_background(self: &Arc<Self>) {
        events::spawn_runner(self.clone());
        follow::spawn(self.clone());
        let prewarm = self.sup.config().data_plane.prewarm.clone();
        if prewarm.is_empty() {
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            for p in prewarm {
                let f = FunctionRef {
                    name: p.function.clone(),
                    qualifier: p.version.clone(),
                };
                match svc.prewarm(&f, p.count).await {
                    Ok(n) => {
                        tracing::info!(function = %p.function, started = n, "pre-warmed sandboxes")
                    }
                    Err(e) => {
                        tracing::error!(function = %p.function, error = %e, "pre-warming failed")
                    }
                }
            }
        });
    }

    /// Starts `count` idle sandboxes for `f` (the `--prewarm` pool).
    pub async fn prewarm(&self, f: &FunctionRef, count: u32) -> Result<u32, String> {
        if self.remote.is_some() {
            return Err("--prewarm is not supported with --role frontend".into());
        }
        let resolved = self.resolve(f).await.map_err(|e| e.to_string())?;
        let w = self.plane.as_ref().map_err(Clone::clone)?;
        w.worker
            .prewarm(&resolved, count)
            .await
            .map_err(|e| e.to_string())
    }

    /// The spec an invoke of `f` runs with: registry lookup (cached per registry
    /// generation) and code preparation on the blocking pool.
    pub async fn resolve(&self, f: &FunctionRef) -> Result<worker::FunctionVersionSpec, ApiError> {
        let retire = match (&self.remote, &self.plane) {
            (Some(fe), _) => Retire::Remote(fe),
            (None, Ok(plane)) => Retire::Local(&plane.worker),
            (None, Err(why)) => {
                return Err(ApiError::service(format!(
                    "the data plane is not running: {why}"
                )))
            }
        };
        let routed = self.aliases.route(&self.sup, f).await?;
        let f = routed.as_ref().unwrap_or(f);
        if let Some(spec) = self.specs.current(&self.sup, f) {
            return Ok(spec);
        }
        let source = match &self.remote {
            Some(fe) => fe.code_source().to_owned(),
            None => LOCAL_CODE_SOURCE.to_owned(),
        };
        let (sup, f2, specs, codes) = (
            self.sup.clone(),
            f.clone(),
            self.specs.clone(),
            self.codes.clone(),
        );
        // The registry read takes a mutex held across fsyncs: off async threads.
        let resolved =
            tokio::task::spawn_blocking(move || specs.resolve(&sup, &f2, &source, &codes))
                .await
                .map_err(|e| ApiError::service(format!("internal task failed: {e}")))??;
        if resolved.revised {
            // Sandboxes are keyed by revision too, so the old ones would never serve
            // again: stop them now instead of at the idle timeout. Other functions'
            // sandboxes stay warm.
            let s = &resolved.spec;
            match retire {
                Retire::Remote(fe) => fe.forget(&s.name, Some(&s.version), Some(&s.revision)),
                Retire::Local(w) => {
                    w.retire_stale(&s.name, &s.version, &s.revision);
                }
            }
        }
        Ok(resolved.spec)
    }

    /// Whether `f` names an existing version (DryRun, Event).
    async fn exists(&self, f: &FunctionRef) -> Result<(), ApiError> {
        let sup = self.sup.clone();
        let f = self
            .aliases
            .route(&sup, f)
            .await?
            .unwrap_or_else(|| f.clone());
        tokio::task::spawn_blocking(move || Specs::record(&sup, &f).map(drop))
            .await
            .map_err(|e| ApiError::service(format!("internal task failed: {e}")))?
    }

    /// One synchronous invocation through the worker.
    pub async fn run(
        &self,
        f: &FunctionRef,
        req: InvokeRequest,
    ) -> Result<InvokeOutcome, RunError> {
        let spec = self.resolve(f).await?;
        let _slot = self.cluster_slot(&spec).await?;
        if let Some(fe) = &self.remote {
            return self.run_remote(fe, &spec, req, None).await;
        }
        let plane = self
            .plane
            .as_ref()
            .map_err(|why| ApiError::service(format!("the data plane is not running: {why}")))?;
        let out = plane.worker.invoke(&spec, req).await;
        self.retire_if_superseded(plane, &spec);
        Ok(out?)
    }

    /// With `--etcd`, a concurrency slot across all the frontends, held until the invoke
    /// ends: one of the function's reserved slots, or, for a function without a
    /// reservation, one of the account's unreserved ones (the account limit less all
    /// reservations). `None` without `--etcd`: each host counts its own.
    pub(super) async fn cluster_slot(
        &self,
        spec: &worker::FunctionVersionSpec,
    ) -> Result<Option<crate::shared::slots::Slot>, RunError> {
        let Some(shared) = self.sup.shared() else {
            return Ok(None);
        };
        let (pool, size, reason) = match spec.reserved_concurrency {
            Some(n) => (
                spec.name.as_str(),
                n,
                ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            ),
            None => {
                let account = self.sup.config().account_concurrency();
                let unreserved = u64::from(account).saturating_sub(self.specs.reserved_total());
                (
                    crate::shared::slots::ACCOUNT_POOL,
                    u32::try_from(unreserved).unwrap_or(u32::MAX),
                    ThrottleReason::ConcurrentInvocationLimitExceeded,
                )
            }
        };
        let unavailable =
            |m: String| RunError::Api(ApiError::new(crate::http::ErrorKind::ServiceUnavailable, m));
        let lease = shared
            .lease()
            .ok_or_else(|| unavailable("this frontend has not joined the cluster yet".into()))?;
        let mut acquired = shared.slots.acquire(pool, size, lease).await;
        if let Err(EtcdError::LeaseLost(_)) = &acquired {
            // etcd was away longer than the lease's TTL and is back: wait for this
            // frontend's new registration rather than failing the invoke.
            if let Some(renewed) = shared.renewed_lease(lease, LEASE_RENEW_WAIT).await {
                acquired = shared.slots.acquire(pool, size, renewed).await;
            }
        }
        match acquired {
            Ok(Some(slot)) => Ok(Some(slot)),
            Ok(None) => Err(RunError::Throttled(reason)),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// After an invoke of `spec`, whose sandbox is idle again.
    fn retire_if_superseded(&self, plane: &Host, spec: &worker::FunctionVersionSpec) {
        // The version it ran (an alias was resolved to it).
        let f = FunctionRef {
            name: spec.name.clone(),
            qualifier: Some(spec.version.clone()),
        };
        if let Some(current) = self.specs.current_revision(&f) {
            if current != spec.revision {
                // A newer revision was resolved while this invoke ran: its sandbox
                // parked under the old revision, where nothing will pick it again.
                plane
                    .worker
                    .retire_stale(&spec.name, &spec.version, &current);
            }
        }
    }

    pub(crate) fn metrics_text(&self) -> String {
        let depth = self.events.depth();
        let mut text = self.metrics.render(depth);
        if let Some(w) = self.worker() {
            text.push_str(&w.metrics());
        }
        if let Some(fe) = &self.remote {
            text.push_str(&fe.metrics());
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use std::time::Duration;
    use worker::SnapStartFailure;

    fn answered(f: SnapStartFailure) -> (u16, String, String) {
        let RunError::Api(e) = RunError::from(WorkerError::SnapStart(f)) else {
            panic!("a SnapStart failure is answered as an API error");
        };
        let message = e.message.clone();
        let r = e.into_response();
        let kind = r.headers()["x-amzn-ErrorType"].to_str().unwrap().to_owned();
        (r.status().as_u16(), kind, message)
    }

    #[test]
    fn failed_restores_are_lambdas_snapstart_errors() {
        let hook = SnapStartFailure::hook(
            "Runtime.AfterRestoreError".into(),
            br#"{"errorMessage":"hook broke"}"#,
        );
        let (status, kind, message) = answered(hook);
        assert_eq!((status, kind.as_str()), (400, "SnapStartException"));
        assert!(
            message.contains("Runtime.AfterRestoreError: hook broke"),
            "{message}"
        );
        let (status, kind, _) = answered(SnapStartFailure::Timeout(Duration::from_secs(10)));
        assert_eq!((status, kind.as_str()), (408, "SnapStartTimeoutException"));
    }
}
