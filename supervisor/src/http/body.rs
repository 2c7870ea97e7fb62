//! Buffered request bodies with Lambda's size limit.

use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;

/// Bytes read past the limit before giving up on a polite 413: reading the
/// rest lets clients that stream the whole upload see the error instead of
/// a connection reset.
const DRAIN_LIMIT: u64 = 256 * 1024 * 1024;

pub enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most `limit` bytes; larger bodies are drained (up to a cap) and
/// reported as [`BodyError::TooLarge`].
pub async fn read_limited(
    body: Body,
    limit: usize,
    content_length: Option<u64>,
) -> Result<Bytes, BodyError> {
    if content_length.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(BodyError::TooLarge);
    }
    let mut body = body;
    let mut buf = Vec::with_capacity(content_length.map_or(0, |n| n.min(limit as u64) as usize));
    let mut seen: u64 = 0;
    let mut over = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if seen > limit as u64 {
            over = true;
            buf = Vec::new();
            if seen > DRAIN_LIMIT {
                break;
            }
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if over {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards the body (up to the drain cap), so a client that
/// sends its whole upload before reading still gets the error response.
pub async fn discard(body: Body) {
    let mut body = body;
    let mut seen: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
}
