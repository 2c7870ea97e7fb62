//! The routes other frontends call (`/_peer/code/{object_id}`), outside SigV4: each
//! request carries an HMAC under a key derived from the shared master key instead.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use http_body_util::BodyExt as _;

use super::peer_code::{is_fresh, verify, AUTH_HEADER, MAX_OBJECT_BYTES, ROUTE};
use crate::Supervisor;

pub fn routes(sup: Arc<Supervisor>) -> Router {
    Router::new()
        .route(ROUTE, put(put_object).get(get_object))
        .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES))
        .with_state(sup)
}

fn authentic(
    sup: &Supervisor,
    headers: &HeaderMap,
    method: &Method,
    id: &str,
    body: &[u8],
) -> bool {
    let Some(shared) = sup.shared() else {
        return false;
    };
    let path = ROUTE.replace("{object_id}", id);
    headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| verify(shared.peers.key(), h, method.as_str(), &path, body))
}

async fn put_object(
    State(sup): State<Arc<Supervisor>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A request without a fresh signature is refused before its body is read.
    let fresh = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_fresh);
    if !fresh {
        return StatusCode::FORBIDDEN.into_response();
    }
    let body: Bytes = match http_body_util::Limited::new(body, MAX_OBJECT_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    if !authentic(&sup, &headers, &Method::PUT, &id, &body) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let stored = tokio::task::spawn_blocking(move || sup.store().put_sealed(&id, &body)).await;
    match stored {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot store a code object pushed by another frontend");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn get_object(
    State(sup): State<Arc<Supervisor>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authentic(&sup, &headers, &Method::GET, &id, b"") {
        return StatusCode::FORBIDDEN.into_response();
    }
    match tokio::task::spawn_blocking(move || sup.store().sealed(&id)).await {
        Ok(Ok(Some(bytes))) => bytes.into_response(),
        Ok(Ok(None)) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
