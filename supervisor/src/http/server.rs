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

/// Bodies above this size need one of [`LARGE_BODY_PERMITS`] while buffered,
/// bounding the memory unauthenticated-looking floods can pin.
const LARGE_BODY_BYTES: u64 = 1024 * 1024;
pub const LARGE_BODY_PERMITS: usize = 4;
/// A slow sender cannot hold a large-body permit longer than this.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

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
        // The auth layer already enforced MAX_REQUEST_BYTES while buffering;
        // axum's 2 MB extractor default would refuse valid uploads.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(sup.clone(), authenticate))
        .with_state(sup)
        .merge(public)
}

async fn unknown_operation() -> ApiError {
    ApiError::new(ErrorKind::UnknownOperation, "Unknown operation")
}

/// Buffers the body (the payload hash is part of the signature), verifies
/// the signature, then hands the request on with the buffered body.
async fn authenticate(State(sup): State<Arc<Supervisor>>, req: Request, next: Next) -> Response {
    let request_id = uuid_v4();
    let mut resp = match check(&sup, req).await {
        Ok(req) => next.run(req).await,
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

async fn check(sup: &Supervisor, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    // Refuse what can be refused before buffering the body; the body is
    // still read (and thrown away) so the client sees the 403.
    if let Err(e) =
        sup.verifier()
            .precheck(&parts.headers, parts.uri.query(), crate::timefmt::now())
    {
        tracing::info!(path = parts.uri.path(), error = %e, "rejected request");
        let _ = tokio::time::timeout(BODY_READ_TIMEOUT, discard(body)).await;
        return Err(ApiError::from(e));
    }
    let content_length = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let _permit = if content_length.is_none_or(|n| n > LARGE_BODY_BYTES) {
        Some(
            sup.large_body_permits()
                .acquire()
                .await
                .map_err(|_| ApiError::service("server shutting down"))?,
        )
    } else {
        None
    };
    let read = read_limited(body, MAX_REQUEST_BYTES, content_length);
    let Ok(read) = tokio::time::timeout(BODY_READ_TIMEOUT, read).await else {
        return Err(ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!(
                "request body not received within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
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
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
