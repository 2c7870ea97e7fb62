//! The routes other frontends call (`/_peer/code/{object_id}`, `/_peer/chunk/{chunk_id}`,
//! `/_peer/chunks/missing`), outside SigV4: each request carries an HMAC under a key
//! derived from the shared master key instead.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use chunkstore::ChunkId;
use http_body_util::BodyExt as _;

use super::peer_chunks::{parse_listing, CHUNK_ROUTE, MAX_LISTING_BYTES, MISSING_ROUTE};
use super::peer_code::{is_fresh, verify, AUTH_HEADER, MAX_OBJECT_BYTES, ROUTE};
use crate::Supervisor;

pub fn routes(sup: Arc<Supervisor>) -> Router {
    Router::new()
        .route(ROUTE, put(put_object).get(get_object))
        .route(CHUNK_ROUTE, put(put_chunk).get(get_chunk))
        .route(MISSING_ROUTE, post(missing_chunks))
        .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES))
        .with_state(sup)
}

fn authentic(
    sup: &Supervisor,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
) -> bool {
    let Some(shared) = sup.shared() else {
        return false;
    };
    headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| verify(shared.peers.key(), h, method.as_str(), path, body))
}

/// The body of a signed request, at most `limit` bytes; a request without a fresh
/// signature is refused before its body is read, one with a wrong one after.
async fn signed_body(
    sup: &Supervisor,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: Body,
    limit: usize,
) -> Result<Bytes, Response> {
    let fresh = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_fresh);
    if !fresh {
        return Err(StatusCode::FORBIDDEN.into_response());
    }
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?
        .to_bytes();
    if !authentic(sup, headers, method, path, &body) {
        return Err(StatusCode::FORBIDDEN.into_response());
    }
    Ok(body)
}

async fn put_object(
    State(sup): State<Arc<Supervisor>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = ROUTE.replace("{object_id}", &id);
    let body = match signed_body(&sup, &headers, &Method::PUT, &path, body, MAX_OBJECT_BYTES).await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
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
    if !authentic(
        &sup,
        &headers,
        &Method::GET,
        &ROUTE.replace("{object_id}", &id),
        b"",
    ) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match tokio::task::spawn_blocking(move || sup.store().sealed(&id)).await {
        Ok(Ok(Some(bytes))) => bytes.into_response(),
        Ok(Ok(None)) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A chunk another frontend stored: kept if its bytes are the chunk its name says.
async fn put_chunk(
    State(sup): State<Arc<Supervisor>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = CHUNK_ROUTE.replace("{chunk_id}", &id);
    let limit = chunkstore::convergent::MAX_SEALED_LEN;
    let body = match signed_body(&sup, &headers, &Method::PUT, &path, body, limit).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Some(id) = ChunkId::from_hex(&id) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let chunks = sup.images().chunks();
    match tokio::task::spawn_blocking(move || chunks.put_copy(&id, &body)).await {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "refused an image chunk pushed by another frontend");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn get_chunk(
    State(sup): State<Arc<Supervisor>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = CHUNK_ROUTE.replace("{chunk_id}", &id);
    if !authentic(&sup, &headers, &Method::GET, &path, b"") {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(id) = ChunkId::from_hex(&id) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let chunks = sup.images().chunks();
    match tokio::task::spawn_blocking(move || chunks.get(&id)).await {
        Ok(Ok(bytes)) => bytes.into_response(),
        Ok(Err(chunkstore::StoreError::Missing(_))) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Which of the listed chunks this frontend lacks.
async fn missing_chunks(
    State(sup): State<Arc<Supervisor>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let listing = match signed_body(
        &sup,
        &headers,
        &Method::POST,
        MISSING_ROUTE,
        body,
        MAX_LISTING_BYTES,
    )
    .await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Some(ids) = parse_listing(&listing) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let chunks = sup.images().chunks();
    let missing = tokio::task::spawn_blocking(move || {
        let missing: Vec<ChunkId> = ids.into_iter().filter(|id| !chunks.contains(id)).collect();
        super::peer_chunks::listing(&missing)
    });
    match missing.await {
        Ok(listing) => listing.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
