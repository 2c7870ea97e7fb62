//! Router assembly, the SigV4 layer every request passes, and serving with
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

use super::body::{discard, read_limited, BodyError};
use super::error::{ApiError, ErrorKind};
use crate::auth::VerifyRequest;
use crate::ids::uuid_v4;
use crate::Supervisor;

/// Lambda's request payload limit for CreateFunction/UpdateFunctionCode
/// (a 50 MB zip, base64-encoded, inside JSON).
pub const MAX_REQUEST_BYTES: usize = 70_167_211;

/// Bodies above this size take permits from a budget of [`LARGE_BODY_PERMITS`] MiB
/// (one per MiB of body) from before they are read until their request has been
/// answered: a package is held several times over while decoded, checked, encrypted
/// and stored, and concurrent uploads must not add up without bound.
const LARGE_BODY_BYTES: u64 = 1024 * 1024;
pub const LARGE_BODY_PERMITS: usize = 160;
/// A slow sender cannot hold a large-body permit longer than this.
const LARGE_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Bodies up to LARGE_BODY_BYTES (every Invoke) must arrive within this.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A client must send a whole request head within this (also the idle limit of a
/// kept-alive connection waiting for its next request).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections served at once; past it the listener waits (the kernel's backlog queues).
pub const MAX_CONNECTIONS: usize = 2048;
/// A refused request whose body is at most this is still read (briefly) so the client
/// sees the error rather than a reset; a larger one is not read at all.
const DRAIN_REFUSED_BYTES: u64 = 64 * 1024;
const DRAIN_REFUSED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

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
        // The auth layer already enforced MAX_REQUEST_BYTES while buffering;
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
        // The body's memory permit is held until the handler is done with it.
        Ok((req, _permit)) => next.run(req).await,
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
    if let Err(e) =
        sup.verifier()
            .precheck(&parts.headers, parts.uri.query(), crate::timefmt::now())
    {
        tracing::info!(path = parts.uri.path(), error = %e, "rejected request");
        if content_length.is_some_and(|n| n <= DRAIN_REFUSED_BYTES) {
            let _ = tokio::time::timeout(DRAIN_REFUSED_TIMEOUT, discard(body)).await;
        }
        return Err(ApiError::from(e));
    }
    let large = content_length.is_none_or(|n| n > LARGE_BODY_BYTES);
    let permit = if large {
        // An unsized body may grow to the request limit.
        let mib = content_length
            .unwrap_or(MAX_REQUEST_BYTES as u64)
            .div_ceil(1 << 20);
        let need = u32::try_from(mib)
            .unwrap_or(u32::MAX)
            .min(LARGE_BODY_PERMITS as u32);
        Some(
            sup.large_body_permits()
                .acquire_many(need)
                .await
                .map_err(|_| ApiError::service("server shutting down"))?,
        )
    } else {
        None
    };
    let limit = if large {
        LARGE_BODY_READ_TIMEOUT
    } else {
        BODY_READ_TIMEOUT
    };
    let read = read_limited(body, MAX_REQUEST_BYTES, content_length);
    let Ok(read) = tokio::time::timeout(limit, read).await else {
        return Err(ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!("request body not received within {} s", limit.as_secs()),
        ));
    };
    let bytes = match read {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(ApiError::new(
                ErrorKind::RequestTooLarge,
                format!("Request must be smaller than {MAX_REQUEST_BYTES} bytes"),
            ))
        }
        Err(BodyError::Read(e)) => {
            return Err(ApiError::new(
                ErrorKind::InvalidRequestContent,
                format!("reading request body: {e}"),
            ))
        }
    };
    sup.verifier()
        .verify(
            &VerifyRequest {
                method: parts.method.as_str(),
                raw_path: parts.uri.path(),
                raw_query: parts.uri.query(),
                headers: &parts.headers,
                body: &bytes,
            },
            crate::timefmt::now(),
        )
        .map_err(|e| {
            tracing::info!(path = parts.uri.path(), error = %e, "rejected request");
            ApiError::from(e)
        })?;
    Ok((Request::from_parts(parts, Body::from(bytes)), permit))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (idle kept-alive connections close at once). Each connection gets
/// [`HEADER_READ_TIMEOUT`] to send a request head, and at most [`MAX_CONNECTIONS`] are
/// served at once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
