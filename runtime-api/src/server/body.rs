//! Request body helpers: bounded buffering and streaming-trailer extraction.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::HeaderMap;

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body read failed: {0}")]
    Truncated(#[from] hyper::Error),
}

/// Reads a whole body, refusing to buffer more than `limit` bytes.
pub async fn read_limited(mut body: Incoming, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// One step of a streamed body.
pub enum StreamItem {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// Pulls the next data chunk or trailer block; `None` at the end.
pub async fn next_item(body: &mut Incoming) -> Option<Result<StreamItem, hyper::Error>> {
    loop {
        let frame = match body.frame().await? {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => return Some(Ok(StreamItem::Data(data))),
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Some(Ok(StreamItem::Trailers(trailers)));
                }
            }
        }
    }
}

/// A header value as a string, if present and visible ASCII.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
