//! Handlers for SnapStart's `/2018-06-01/runtime/restore/...` (see `restore_state`).

use super::errors::ApiError;
use super::invocation::error_document;
use super::reply::{accepted, json_response, Reply};
use super::state::Invocations;
use hyper::body::Incoming;
use hyper::Request;

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
    let (error_type, body) = error_document(req).await?;
    inv.restore_error(error_type, body)?;
    Ok(accepted())
}
