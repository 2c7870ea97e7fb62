//! Handlers for SnapStart's `/2018-06-01/runtime/restore/...` (see `restore_state`).

use super::body::{header_str, read_limited, BodyError};
use super::errors::{ApiError, MAX_RESPONSE_BYTES};
use super::invocation::normalize_error;
use super::reply::{accepted, json_response, Reply};
use super::state::Invocations;
use hyper::body::Incoming;
use hyper::Request;

const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// `GET /runtime/restore/next`: returns once the sandbox was restored from its
/// snapshot (at once when none is taken).
pub async fn next(inv: &Invocations) -> Result<Reply, ApiError> {
    if let Some(rx) = inv.restore_next()? {
        rx.await.map_err(|_| ApiError::RuntimeExited)?;
    }
    Ok(json_response(200, Vec::new(), &[]))
}

/// `POST /runtime/restore/error`: the runtime's after-restore hooks failed.
pub async fn error(inv: &Invocations, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let header_type = header_str(req.headers(), ERROR_TYPE_HEADER).map(str::to_string);
    let raw = read_limited(req.into_body(), MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { limit } => ApiError::RequestEntityTooLarge { limit },
            BodyError::Truncated(e) => ApiError::TruncatedHttpRequest(e.to_string()),
        })?;
    let (error_type, body) = normalize_error(header_type, raw, "Runtime.Unknown");
    inv.restore_error(error_type, body)?;
    Ok(accepted())
}
