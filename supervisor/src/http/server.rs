//! Router assembly, the SigV4 layer every request passes, and serving with
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

use super::body::{discard, drain_in_background, is_invoke, read_limited, BodyError, BodyLimit};
use super::error::{ApiError, ErrorKind};
use super::fdlimit;
use crate::auth::VerifyRequest;
use crate::ids::uuid_v4;
use crate::Supervisor;

/// Lambda's request payload limit for CreateFunction/UpdateFunctionCode
/// (a 50 MB zip, base64-encoded, inside JSON); Invoke routes have their own
/// (`BodyLimit`).
pub const MAX_REQUEST_BYTES: usize = 70_167_211;

/// Bodies above this size take permits from a budget of [`LARGE_BODY_PERMITS`] MiB
/// (one per MiB of body) from before they are read until their request has been
/// answered: a package is held several times over while decoded, checked, encrypted
/// and stored, and concurrent uploads must not add up without bound. An Invoke
/// payload (at most 6 MB, held once) gives its permits back once buffered, so a
/// long-running function never starves uploads.
const LARGE_BODY_BYTES: u64 = 1024 * 1024;
pub const LARGE_BODY_PERMITS: usize = 160;
/// How long a request waits for large-body permits before it is throttled (429).
const LARGE_BODY_PERMIT_WAIT: Duration = Duration::from_secs(30);
/// A body must arrive within this plus its size at [`MIN_BODY_RATE`]; bodies of
/// unknown size get [`MAX_BODY_READ`].
const BODY_READ_GRACE: Duration = Duration::from_secs(10);
const MIN_BODY_RATE: u64 = 32 * 1024;
const MAX_BODY_READ: Duration = Duration::from_secs(120);
/// A client must send a whole request head within this (also the idle limit of a
/// kept-alive connection waiting for its next request).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused request whose body is at most this is still read (briefly) so the client
/// sees the error rather than a reset; a larger one is not read at all.
const DRAIN_REFUSED_BYTES: u64 = 64 * 1024;
const DRAIN_REFUSED_TIMEOUT: Duration = Duration::from_secs(2);

/// The full API: control plane routes plus `signed` (e.g. the invoke path),
/// all behind SigV4 authentication, plus `public` routes that skip it (e.g.
/// `/metrics` for scrapers).
pub fn build_router(
    sup: Arc<Supervisor>,
    signed: Router<Arc<Supervisor>>,
    public: Router,
) -> Router {
    Router::new()
        .merge(crate::control::routes())
        .merge(signed)
        .fallback(unknown_operation)
        // A known path with another method is an unknown operation too, in Lambda's
        // error shape (axum's default is a bare 405).
        .method_not_allowed_fallback(unknown_operation)
        // The auth layer already enforced the route's body limit while buffering;
        // axum's 2 MB extractor default would refuse valid uploads.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(sup.clone(), authenticate))
        .with_state(sup)
        .merge(public.method_not_allowed_fallback(unknown_operation))
}

async fn unknown_operation() -> ApiError {
    ApiError::new(ErrorKind::UnknownOperation, "Unknown operation")
}

/// Buffers the body (the payload hash is part of the signature), verifies
/// the signature, then hands the request on with the buffered body.
async fn authenticate(State(sup): State<Arc<Supervisor>>, req: Request, next: Next) -> Response {
    let request_id = uuid_v4();
    let mut resp = match check(&sup, req).await {
        Ok((req, permit)) => {
            // An upload's permit is held until the handler is done with it.
            let _held = (!is_invoke(req.uri().path())).then_some(permit);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    // Handlers that mint their own id (Invoke: it is the function's request id) keep it.
    if !resp.headers().contains_key("x-amzn-requestid") {
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-amzn-RequestId", v);
        }
    }
    resp
}

/// Permits of the large-body budget a request holds.
type BodyPermit<'a> = Option<tokio::sync::SemaphorePermit<'a>>;

async fn check(sup: &Supervisor, req: Request) -> Result<(Request, BodyPermit<'_>), ApiError> {
    let (parts, body) = req.into_parts();
    let content_length = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refuse what can be refused before buffering the body. A small body is drained
    // (briefly) so the client sees the 403; a large or unsized one is never read: the
    // connection closes after the answer.
    let prechecked =
        match sup
            .verifier()
            .precheck(&parts.headers, parts.uri.query(), crate::timefmt::now())
        {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(path = parts.uri.path(), error = %e, "rejected request");
                if content_length.is_some_and(|n| n <= DRAIN_REFUSED_BYTES) {
                    let _ = tokio::time::timeout(DRAIN_REFUSED_TIMEOUT, discard(body)).await;
                }
                return Err(ApiError::from(e));
            }
        };
    // Past the route's limit: answered at once, the body drained on the side.
    let limit = BodyLimit::of(&parts);
    if let Some(n) = content_length.filter(|&n| n > limit.bytes() as u64) {
        drain_in_background(&parts, body, content_length, body_deadline(content_length));
        return Err(limit.refusal(n));
    }
    let permit = match body_permit(sup, content_length, limit.bytes()).await {
        Ok(p) => p,
        Err(e) => {
            // Read (and drop) the body so the client gets the 429, which SDKs retry,
            // instead of a connection closed under its upload.
            let _ = tokio::time::timeout(body_deadline(content_length), discard(body)).await;
            return Err(e);
        }
    };
    let bytes = read_body(&parts, body, content_length, limit).await?;
    // The headers passed the precheck (key, scope, date window) when they arrived.
    sup.verifier()
        .verify_prechecked(
            &prechecked,
            &VerifyRequest {
                method: parts.method.as_str(),
                raw_path: parts.uri.path(),
                raw_query: parts.uri.query(),
                headers: &parts.headers,
                body: &bytes,
            },
        )
        .map_err(|e| {
            tracing::info!(path = parts.uri.path(), error = %e, "rejected request");
            ApiError::from(e)
        })?;
    Ok((Request::from_parts(parts, Body::from(bytes)), permit))
}

/// Takes a large (or unsized) body's share of the large-body budget, waiting at
/// most [`LARGE_BODY_PERMIT_WAIT`].
pub(crate) async fn body_permit(
    sup: &Supervisor,
    content_length: Option<u64>,
    limit: usize,
) -> Result<BodyPermit<'_>, ApiError> {
    if content_length.is_some_and(|n| n <= LARGE_BODY_BYTES) {
        return Ok(None);
    }
    // An unsized body may grow to its route's limit.
    let mib = content_length.unwrap_or(limit as u64).div_ceil(1 << 20);
    let need = u32::try_from(mib)
        .unwrap_or(u32::MAX)
        .min(LARGE_BODY_PERMITS as u32);
    let acquire = sup.large_body_permits().acquire_many(need);
    match tokio::time::timeout(LARGE_BODY_PERMIT_WAIT, acquire).await {
        Ok(Ok(p)) => Ok(Some(p)),
        Ok(Err(_)) => Err(ApiError::service("server shutting down")),
        Err(_) => Err(ApiError::new(
            ErrorKind::TooManyRequests,
            "Too many large requests in flight; retry later",
        )),
    }
}

/// How long a body of this size may take to arrive.
fn body_deadline(content_length: Option<u64>) -> Duration {
    content_length.map_or(MAX_BODY_READ, |n| {
        (BODY_READ_GRACE + Duration::from_secs(n / MIN_BODY_RATE)).min(MAX_BODY_READ)
    })
}

/// Buffers a body of at most `limit`; one of unknown size that passes it is refused
/// there, not read to its end first.
async fn read_body(
    parts: &axum::http::request::Parts,
    body: Body,
    content_length: Option<u64>,
    limit: BodyLimit,
) -> Result<axum::body::Bytes, ApiError> {
    let deadline = body_deadline(content_length);
    let read = read_limited(body, limit.bytes(), content_length);
    let Ok(read) = tokio::time::timeout(deadline, read).await else {
        return Err(ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!("request body not received within {} s", deadline.as_secs()),
        ));
    };
    read.map_err(|e| match e {
        BodyError::TooLarge { seen, rest } => {
            drain_in_background(parts, rest, content_length, deadline);
            limit.refusal(seen)
        }
        BodyError::Read(e) => ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!("reading request body: {e}"),
        ),
    })
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (idle kept-alive connections close at once). Each connection gets
/// [`HEADER_READ_TIMEOUT`] to send a request head, and at most
/// [`fdlimit::connection_cap`] of the descriptor limit are served at once; past it the
/// listener waits (the kernel's backlog queues).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let (max_connections, nofile) = fdlimit::current_connection_cap();
    tracing::info!(max_connections, nofile, "connection cap");
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        let routed = tower::ServiceExt::map_request(router.clone(), move |req| {
            super::peer::prepare(req, peer)
        });
        let service = hyper_util::service::TowerToHyperService::new(routed);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_deadline_grows_with_size_up_to_a_cap() {
        assert_eq!(body_deadline(Some(100)), Duration::from_secs(10));
        assert_eq!(body_deadline(Some(1_000_000)), Duration::from_secs(10 + 30));
        assert_eq!(body_deadline(Some(70_000_000)), MAX_BODY_READ);
        assert_eq!(body_deadline(None), MAX_BODY_READ);
    }
}
